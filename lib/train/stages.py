"""The learning-rate schedule of a run, and progressive resizing: training in stages of growing size.

    cbs = schedule_callbacks(cfg)                         # lib.train.loop.fit: the lr, batch by batch
    learn.add_cbs(stage_callbacks(cfg, comp, folds, data, data_cfg, model))   # setup_run: sizes

A run's lr follows *phases*, each a number of epochs with its own schedule, set before every
training batch from the run's position (epoch + the fraction of it done), so a resumed run sets
exactly the lr of an uninterrupted one:

- ``onecycle`` / ``flat_cos``: one phase per stage (one stage, ``img_size`` for ``epochs`` at ``lr``,
  without ``stages``), each a full one-cycle (warm-up ``warmup_pct``, peak, cosine to peak / 1e5) or
  flat-then-cosine, restarting at every stage as fastai's ``fit_one_cycle`` per size would;
- ``cosine_restarts`` (SGDR): cosine cycles from the peak down to peak / 1e5, the first
  ``restart_epochs`` long (and warming up over ``warmup_pct`` of it, as one-cycle), each next one
  ``restart_mult`` times the one before, each restarting at the peak; per stage, like one-cycle. A run
  whose epochs are not a sum of whole cycles (1, 2, 4, ... with 1 and 2: 1, 3, 7 epochs) ends mid-cycle;
- ``plateau``: ``warmup_pct`` of the run warming up to ``lr``, then flat, times ``plateau_factor``
  for every ``plateau_patience`` epochs in a row without a new best ``monitor`` (counted from the
  recorded history, so nothing but the history is needed to resume it; fastai's rule: the wait
  restarts after each drop);
- with ``swa_lr``, the last ``swa_epochs`` epochs run at that constant lr, the (last stage's) schedule
  ending that many epochs earlier (SWA, ``lib.train.averaging``);
- with ``freeze_epochs``, the first stage's first epochs, which train the head alone
  (``lib.train.callbacks.FreezeBody``), are a phase of their own, and the rest of that stage another,
  each a full cycle of the schedule: fastai's ``fine_tune`` (one cycle frozen, then one unfrozen).

``stages: [[img_size, epochs], [img_size, epochs, lr], ...]`` (lr defaults to ``lr``) trains each
stage at its size, from the kit's pre-resized cache of that size, then the next, in one run and one
history (its ``epoch`` counts on across stages; each record's ``img_size`` is the size trained on).
``epochs`` must be the stages' total and ``img_size`` the last stage's: that is the size OOF, test
and every re-prediction (04, 05, export) use, so a recipe never says two things.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from fastai.callback.core import Callback
from fastai.callback.schedule import SchedCos, combined_cos

from lib.core.choices import direction
from lib.model.factory import check_input_size
from lib.train.build import build_datasets
from lib.train.callbacks import RunRecorder
from lib.train.distributed import unwrap, world_size


def parse_stages(cfg) -> list[tuple[int, int, float]]:
    """The run's stages as (img_size, epochs, peak lr); without ``stages`` the one stage
    (img_size, epochs, lr). Assumes a checked recipe (``lib.core.rules.stage_problems``)."""
    if not cfg.stages:
        return [(cfg.img_size, cfg.epochs, cfg.lr)]
    return [(int(s[0]), int(s[1]), float(s[2]) if len(s) > 2 else cfg.lr) for s in cfg.stages]


def cosine_restarts(epochs: float, lr: float, warmup_pct: float, first: float, mult: float):
    """The lr at a position in [0, 1) of an ``epochs``-long phase of SGDR: cosine cycles from ``lr``
    down to lr / 1e5, of ``first``, first x ``mult``, first x mult^2, ... epochs, each restarting at
    ``lr``; the first warms up from lr / 25 over ``warmup_pct`` of it (one-cycle's shape)."""
    warm, cool = combined_cos(warmup_pct, lr / 25, lr, lr / 1e5), SchedCos(lr, lr / 1e5)

    def at(pos: float) -> float:
        t, start, length = pos * epochs, 0.0, first
        while t >= start + length:
            start, length = start + length, length * mult
        x = (t - start) / length
        return warm(x) if start == 0 else cool(x)
    return at


SCHEDULES = {  # name -> (recipe, epochs, peak lr) -> the lr at a position in [0, 1) of a phase
    "onecycle": lambda cfg, n, lr: combined_cos(cfg.warmup_pct, lr / 25, lr, lr / 1e5),
    "flat_cos": lambda cfg, n, lr: combined_cos(0.75, lr, lr, lr / 1e5),
    "plateau": lambda cfg, n, lr: combined_cos(cfg.warmup_pct, lr / 25, lr, lr),  # flat: LrSchedule lowers it
    "cosine_restarts": lambda cfg, n, lr: cosine_restarts(n, lr, cfg.warmup_pct, cfg.restart_epochs,
                                                          cfg.restart_mult),
}


def lr_phases(cfg) -> list[tuple[int, object]]:
    """(epochs, lr at a position in [0, 1) of the phase) for each phase of the run, in order."""
    stages = [(n, lr) for _, n, lr in parse_stages(cfg)]
    if cfg.freeze_epochs:  # the frozen epochs are a cycle of their own, then the rest of the first stage
        (n, lr), rest = stages[0], stages[1:]
        stages = [(cfg.freeze_epochs, lr), (n - cfg.freeze_epochs, lr), *rest]
    if cfg.swa_lr is not None:  # the schedule ends swa_epochs early; SWA's constant lr takes those epochs
        stages[-1] = (stages[-1][0] - cfg.swa_epochs, stages[-1][1])
    phases = [(n, SCHEDULES[cfg.schedule](cfg, n, lr)) for n, lr in stages]
    if cfg.swa_lr is not None:
        phases.append((cfg.swa_epochs, lambda pos, lr=cfg.swa_lr: lr))
    return phases


def plateau_drops(history: list, monitor: str, patience: int) -> int:
    """How many times the lr has dropped after ``history`` (epoch records, in order): once for every
    ``patience`` epochs in a row without a new best ``monitor``, the count restarting after a drop."""
    sign = direction(monitor)
    best, wait, drops = None, 0, 0
    for h in history:
        v = sign * h[monitor]
        if best is None or v > best:
            best, wait = v, 0
        else:
            wait += 1
            if wait >= patience:
                drops, wait = drops + 1, 0
    return drops


class LrSchedule(Callback):
    """Sets the lr before every training batch: the phase's schedule at the run's position (epoch +
    batch / batches), times ``factor ** plateau_drops`` with ``plateau`` (monitor, factor, patience).
    Takes the place of fastai's ``ParamScheduler``, which sees the position only as a share of one fit."""
    order = 60

    def __init__(self, phases: list, plateau: tuple | None = None):
        self.phases, self.plateau, self.scale = phases, plateau, 1.0
        self.starts = [sum(n for n, _ in phases[:i]) for i in range(len(phases))]

    def lr_at(self, pos: float) -> float:
        """The scheduled lr (before any plateau drop) at ``pos`` epochs into the run."""
        for start, (n, f) in zip(self.starts, self.phases):
            if pos < start + n:
                return float(f((pos - start) / n))
        n, f = self.phases[-1]
        return float(f(1.0))

    def before_train(self):
        if self.plateau is None:
            return
        monitor, factor, patience = self.plateau
        rec = next((cb for cb in self.learn.cbs if isinstance(cb, RunRecorder)), None)
        history = [h for h in (rec.history if rec else []) if h["epoch"] < self.epoch]
        drops = plateau_drops(history, monitor, patience)
        if world_size() > 1:  # only rank 0 validates: its count holds for every rank
            t = torch.tensor([drops], device=next(unwrap(self.learn.model).parameters()).device)
            dist.broadcast(t, 0)
            drops = int(t.item())
        self.scale = factor ** drops

    def before_batch(self):
        if self.training:
            self.opt.set_hyper("lr", self.lr_at(self.epoch + self.iter / self.n_iter) * self.scale)


def schedule_callbacks(cfg) -> list:
    """The lr schedule of ``cfg`` for ``learn.fit``."""
    plateau = (cfg.monitor, cfg.plateau_factor, cfg.plateau_patience) if cfg.schedule == "plateau" else None
    return [LrSchedule(lr_phases(cfg), plateau)]


class StageSwitch(Callback):
    """Before each epoch trains, serves the train and valid loaders that epoch's stage size:
    ``datasets`` maps a size to its (train, valid) datasets, ``sizes`` gives each epoch's size."""
    order = -5  # after ReseedEachEpoch's before_epoch; before_train runs only for epochs that train

    def __init__(self, sizes: list[int], datasets: dict):
        self.sizes, self.datasets = sizes, datasets

    def before_train(self):
        train, valid = self.datasets[self.sizes[min(self.epoch, len(self.sizes) - 1)]]
        if self.dls.train.dataset is not train:
            train.epoch = self.dls.train.dataset.epoch  # ReseedEachEpoch has set this epoch's number
            self.dls.train.dataset, self.dls.valid.dataset = train, valid


def stage_callbacks(cfg, comp, folds, data, data_cfg: dict, model) -> list:
    """[StageSwitch] for a recipe whose stages change size, else []. Every stage size is checked to
    fit the model, and its datasets are built now by ``lib.train.build.build_datasets`` (the same rows and
    targets as ``data``'s at the final size), from the pre-resized cache of that size (made here when
    missing, for the test images too)."""
    stages = parse_stages(cfg)
    if len({s for s, _, _ in stages}) < 2:
        return []
    datasets = {cfg.img_size: (data.train, data.valid)}
    for size in dict.fromkeys(s for s, _, _ in stages):
        if size not in datasets:
            check_input_size(model, cfg.backbone, size)
            at = build_datasets(cfg.replace(img_size=size, stages=None, verbose=False), comp, folds, data_cfg)
            datasets[size] = (at.train, at.valid)
    sizes = [s for s, n, _ in stages for _ in range(n)]
    return [StageSwitch(sizes, datasets)]
