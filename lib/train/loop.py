"""One backbone on one fold with fastai: the run, its artifacts, resume.

    cfg = TrainConfig.from_yaml("params/convnext_tiny.yaml", fold=0)    # lib.core.config
    run = setup_run(cfg)           # opens the competition, builds model, datasets and Learner
    fit(run)                       # trains (or resumes after the last completed epoch)
    write_predictions(run)         # OOF and test probabilities of the kept weights, metrics.json

A run lives in ``runs/<run_name>/``: params.yaml (the recipe), state.pt (resumable: weights,
optimizer, EMA, history), model.safetensors (the kept weights: the last epoch's, or with
``best_epoch: monitor`` the best epoch's by ``monitor``; EMA's when on; the average of epochs with
``swa_epochs`` / ``average_top_k``: ``lib.train.averaging``), metrics.json, oof.csv,
test.csv, curves.png, env.json, data.json (its folds.csv and tables by hash, at setup). ``metrics.json``
with ``"complete": true`` is written last: it marks the run done, and a done run is reused (an
interrupted one resumed) only while the recipe asked for is the one it recorded and its data is too.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from fastai.learner import Learner

from lib.core.backup import failed_pushes
from lib.core.config import TrainConfig
from lib.core.device import cpu_name, default_num_workers, device_list, pick_device
from lib.core.io import read_json, write_csv, write_json
from lib.core.metrics import scores
from lib.core.paths import resolve
from lib.core.precision import Precision, choose_precision, cpu_capability
from lib.core.rundir import RunDir, recipe_changes, run_complete
from lib.core.runlock import RunLock, delete_run, lock_run
from lib.data.competition import Competition, open_competition
from lib.data.folds import folds_hash, make_folds
from lib.model.backbones import load_weights
from lib.model.factory import build_model
from lib.model.forward import predict_loader
from lib.train.averaging import averaging_callbacks, find_averager, finish_averaging
from lib.train.build import FoldData, build_datasets, build_learner, training_callbacks
from lib.train.callbacks import RunRecorder, best_record, find_ema
from lib.train.checkpoint import CheckpointWriter, check_same_data, final_backup, load_state, record_data
from lib.train.distributed import launch, rank, world_size
from lib.train.report import environment, plot_curves
from lib.train.stages import schedule_callbacks, stage_callbacks
from lib.train.tracking import finish_tracking
from lib.train.warmstart import init_weights_file


def full_summary(summary: dict) -> dict:
    """metrics.json of a full-data run: ``write_predictions``' summary with its scores (of its own
    training images) moved under ``train_sample``, ``fold`` None and ``full_data`` true."""
    scores = {k: summary.pop(k) for k in ("log_loss", "accuracy", "f1_macro")}
    return {**summary, "full_data": True, "fold": None, "train_sample": scores}


def train_rank(cfg: TrainConfig, local_rank: int) -> None:
    """What each data-parallel worker runs (``lib.train.distributed.launch``): the run rebuilt from the
    recipe and trained; rank 0 then predicts."""
    run = setup_run(cfg)
    fit(run)
    dist.barrier()
    if local_rank == 0:
        write_predictions(run)


VALID_SCORES = ("log_loss", "accuracy", "f1_macro", "valid_loss")  # an epoch's validation scores in metrics.json


@dataclass
class Run:
    """Everything one training run holds. ``dir`` is ``runs/<run_name>/``."""
    dir: Path
    cfg: TrainConfig
    comp: Competition
    folds: pd.DataFrame
    learn: Learner | None = None
    data: FoldData | None = None
    start_epoch: int = 0
    history: list | None = None
    precision: Precision | None = None  # the dtype it trains and predicts in, and why
    lock: RunLock | None = None  # the run folder's, held from setup_run to write_predictions' end (lib.core.runlock)

    @property
    def complete(self) -> bool:
        return run_complete(self.dir)

    def release(self) -> None:
        """Drop the run folder's lock (``write_predictions`` does at its end; the process's end does too)."""
        if self.lock:
            self.lock.release()


def setup_run(cfg: TrainConfig) -> Run:
    """Open the competition, make or read its folds, and build model, datasets and Learner for
    ``cfg.fold``; resume from ``state.pt`` when there is one. A complete run with the same recipe
    is returned as it is (``fit`` and ``write_predictions`` then do nothing). A resumed or reused run
    must find the folds.csv and tables it started on (its data.json: ``check_same_data``).

    The run folder's lock (``lib.core.runlock``) is taken first and held until ``write_predictions``
    ends or the process does: another process setting up the same run is refused, naming it and the
    holder; ``force`` deletes the folder under that lock. Data-parallel workers take no lock and delete
    nothing (their launching process holds it and did)."""
    cfg = cfg.replace(run_name=cfg.name)
    run_dir = resolve(cfg.runs_dir) / cfg.name
    # the launching process holds the lock and did force's delete: a data-parallel worker does neither
    lock = lock_run(run_dir) if world_size() == 1 else None
    try:
        if cfg.force and lock:
            delete_run(run_dir, lock)
        return _build_run(run_dir, cfg, lock)
    except BaseException:  # nothing of this run is set up: another process may take it
        if lock:
            lock.release()
        raise


def _build_run(run_dir: Path, cfg: TrainConfig, lock: RunLock | None) -> Run:
    """``setup_run`` once the lock is held: the recipe and files checked, competition, folds, model,
    datasets, Learner, and the saved state loaded."""
    check_same_recipe(run_dir, cfg)
    missing = [] if run_complete(run_dir) else cfg.missing_files()
    if missing:
        raise FileNotFoundError("; ".join(missing))
    comp = open_competition(cfg.data_dir, cfg.scan_args, cfg.group_col, verbose=cfg.verbose)
    folds = make_folds(comp, n_folds=cfg.n_folds, seed=42, group_col=cfg.group_col, verbose=cfg.verbose)
    run = Run(run_dir, cfg, comp, folds, lock=lock)
    resume = cfg.resume and (run_dir / RunDir.STATE).exists()
    if run.complete or resume:
        check_same_data(run_dir, cfg)  # the folds and tables it started on (data.json)
    if run.complete:
        if cfg.verbose:
            print(f"{run_dir}: already complete (force=True retrains)")
        return run
    init = init_weights_file(cfg, run_dir, folds)  # init_from, checked before anything is written
    if rank() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.to_yaml(run_dir / RunDir.PARAMS)
        if not resume:
            record_data(run_dir, cfg)
        write_json(run_dir / RunDir.CLASSES, comp.class_table())  # what re-prediction needs, without the data
    # a data-parallel run trains in worker processes (``fit``); this one keeps its model on the CPU
    device = torch.device("cpu") if _launches_workers(cfg) else pick_device(cfg.device, verbose=cfg.verbose)
    torch.manual_seed(cfg.seed)
    model, data_cfg = build_model(cfg, comp.num_classes, pretrained="none" if cfg.init_from else None)
    run.data = build_datasets(cfg, comp, folds, data_cfg)
    run.learn = build_learner(cfg, model, run.data, device, run_dir, comp.num_classes)
    run.precision = choose_precision(device, cfg.precision, verbose=cfg.verbose)
    if cfg.verbose:
        on = f"; CPU {cpu_name()}, capability {cpu_capability()}" if device.type == "cpu" else ""
        print(f"precision: {run.precision.name} ({run.precision.reason}{on})")
    run.learn.add_cbs(training_callbacks(cfg, device, run.precision.dtype))
    run.learn.add_cbs(stage_callbacks(cfg, comp, folds, run.data, data_cfg, model) + averaging_callbacks(cfg))
    run.history = []
    if resume:
        run.start_epoch, run.history = load_state(run.learn, run_dir / RunDir.STATE)
        if cfg.verbose:
            print(f"resuming {cfg.name} after epoch {run.start_epoch}/{cfg.epochs}")
    elif init:
        load_weights(model, init)
        if cfg.verbose:
            print(f"starting from {init}")
    return run


@contextmanager
def cudnn_autotuned(run: Run):
    """cuDNN's autotuner (``torch.backends.cudnn.benchmark``) on while a CUDA run's model trains or
    predicts (``fit``, ``lr_find``, ``write_predictions``), its previous value put back after. A run's
    images have one size (per stage), so the fastest kernel of each convolution, timed on the first
    batch, serves every batch after. Scoped, not switched on for the process: a notebook's later cells
    and other code find the flag as they left it. (Not ``torch.backends.cudnn.flags(benchmark=True)``:
    that context sets every other cuDNN flag to its default too, ``enabled=False`` among them.)"""
    params = next(run.learn.model.parameters(), None) if run.learn else None
    if params is None or params.device.type != "cuda":
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def check_same_recipe(run_dir: Path, cfg: TrainConfig) -> None:
    """A run folder holds one recipe: resuming or reusing it with another would mix two runs."""
    diff = recipe_changes(run_dir, cfg)
    if diff:
        raise ValueError(f"{run_dir} was trained with another recipe: "
                         + ", ".join(f"{k} {b!r} there, {a!r} now" for k, (a, b) in diff.items())
                         + "; pass force=True to train it again, or another run_name or runs_dir")


def _launches_workers(cfg: TrainConfig) -> bool:
    """A data-parallel recipe seen from outside its workers."""
    return len(device_list(cfg.devices, cfg.device)) > 1 and world_size() == 1


def fit(run: Run) -> pd.DataFrame:
    """Train (resuming after the last completed epoch); returns the per-epoch metrics table. With
    ``devices`` > 1, one worker process per device trains and predicts (``lib.train.distributed``)."""
    cfg = run.cfg
    if run.complete:
        return pd.DataFrame(read_json(run.dir / RunDir.METRICS)["epochs"])
    if _launches_workers(cfg):
        launch(cfg, device_list(cfg.devices, cfg.device), train_rank)
        run.history = read_json(run.dir / RunDir.METRICS)["epochs"]
        return pd.DataFrame(run.history)
    writer = CheckpointWriter(run.dir, cfg.sync_to)
    rec = RunRecorder(run.comp.num_classes, cfg.monitor, partial(writer.save_state, run.learn), writer.save_weights,
                      run.history, run.start_epoch, cfg.patience, cfg.verbose, keep=cfg.best_epoch)
    done = run.start_epoch >= cfg.epochs or _stopped_early(run)
    with cudnn_autotuned(run):
        try:
            if not done:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*upsample.*|.*lr_scheduler.*")
                    run.learn.fit(cfg.epochs, cfg.lr, cbs=schedule_callbacks(cfg) + [rec],
                                  start_epoch=run.start_epoch)
        except KeyboardInterrupt:
            writer.flush()
            print(f"interrupted: epochs up to {len(rec.history)} are saved in {run.dir / 'state.pt'}; "
                  "rerun the same command to resume", flush=True)
            raise
        finally:
            writer.close()
        run.history = rec.history
        finish_averaging(run)  # swa_epochs / average_top_k: the averaged weights to model.safetensors
    return pd.DataFrame(rec.history)


def _stopped_early(run: Run) -> bool:
    pat, hist = run.cfg.patience, run.history or []
    if not pat or not hist:
        return False
    return hist[-1]["epoch"] - best_record(hist, run.cfg.monitor)["epoch"] >= pat


@dataclass
class RunPredictions:
    """A run's predictions with its kept weights (``predict_run``). oof: id, fold, target + one
    probability column per class, the validation rows in their order; test: id + classes, the
    competition's test rows (none: 0 rows); device and precision: where and in which dtype it predicted."""
    oof: pd.DataFrame
    test: pd.DataFrame
    device: torch.device
    precision: Precision


def write_predictions(run: Run, progress: bool | None = None) -> dict:
    """Predict the validation fold (OOF) and the test set with the kept weights (model.safetensors);
    write oof.csv (not for a full-data refit: ``lib.predict.refit``), test.csv, curves.png, env.json and, last,
    metrics.json, which it returns. Then the tracker gets the scores and files (``tracker``) and the run
    is backed up (``sync_to``). Three steps: ``predict_run`` (``progress`` None: the recipe's),
    ``run_summary``, ``finish_run``. A complete run is not predicted again: its metrics.json is returned.

    metrics.json: the OOF log_loss, accuracy, f1_macro of the kept weights; weights_from (the
    ``best_epoch`` setting, or the averaging: swa, top_k) and weights_epoch (the epoch they are from; the
    last with averaging); averaging (method, the epochs averaged, bn_updated, swa_lr or k and monitor;
    None when off: ``lib.train.averaging``); folds_sha1 (``lib.data.folds.folds_hash``); best_epoch (the best by
    ``monitor``), last_epoch, and their validation scores valid_best and valid_last (log_loss,
    accuracy, f1_macro, valid_loss, as in the history: picking the best epoch on the fold it is then
    scored on makes valid_best optimistic); ema (decay, horizon_epochs, steps_per_epoch as set; None
    when off); minutes; epochs (the per-epoch history, each epoch's img_size the size it trained at;
    with EMA each epoch's ema_decay and ema_horizon_epochs, at its last update). Epochs count from 0.
    A complete run whose last push to ``sync_to`` failed is pushed again (``final_backup``: raises if it fails).
    Once it returns, the run folder's lock is released (``Run.release``)."""

    if run.complete:
        if run.cfg.sync_to and failed_pushes(run.dir, run.cfg.sync_to):
            final_backup(run.dir, run.cfg.sync_to)
        summary = read_json(run.dir / RunDir.METRICS)
    else:
        preds = predict_run(run, progress)
        summary = finish_run(run, preds, run_summary(run, preds))
    run.release()
    return summary


def predict_run(run: Run, progress: bool | None = None) -> RunPredictions:
    """Load the kept weights (model.safetensors) into the run's model and predict its validation fold
    and the test set, plain (no TTA), in the dtype it trained in, batches of twice its batch size.
    Probabilities are float64 [N, C], rows summing to 1. ``progress`` None: the recipe's. Writes nothing."""
    learn, comp, cfg = run.learn, run.comp, run.cfg
    load_weights(learn.model, run.dir / RunDir.WEIGHTS)
    dev = next(learn.model.parameters()).device
    show = cfg.progress if progress is None else progress
    # the recipe's workers, as the training loaders have them (fastai's DataLoader.num_workers is always 1)
    mk = partial(torch.utils.data.DataLoader, batch_size=cfg.batch_size * 2,
                 num_workers=default_num_workers(dev, cfg.num_workers), pin_memory=dev.type == "cuda")
    precision = run.precision or choose_precision(dev, cfg.precision)
    dtype = precision.dtype  # the dtype it trained in
    with cudnn_autotuned(run):
        oof = predict_loader(learn.model, mk(run.data.valid), ["identity"], dev, dtype=dtype, progress=show)
        test = (predict_loader(learn.model, mk(run.data.test), ["identity"], dev, dtype=dtype, progress=show)
                if len(run.data.test) else np.zeros((0, comp.num_classes)))
    rows = run.data.valid_rows
    oof_df = pd.DataFrame(oof, columns=comp.classes)
    oof_df.insert(0, "target", rows["target"].to_numpy())
    oof_df.insert(0, "fold", cfg.fold)
    oof_df.insert(0, "id", rows["id"].to_numpy())
    test_df = pd.DataFrame(test, columns=comp.classes)
    test_df.insert(0, "id", comp.test["id"].to_numpy())
    return RunPredictions(oof_df, test_df, dev, precision)


def run_summary(run: Run, preds: RunPredictions) -> dict:
    """metrics.json's content (see ``write_predictions``) from the run's history and its OOF ``preds``;
    a full-data run's through ``full_summary``. Writes nothing."""
    learn, cfg = run.learn, run.cfg
    y, oof = preds.oof["target"].to_numpy(), preds.oof[run.comp.classes].to_numpy()
    best, last = best_record(run.history, cfg.monitor), run.history[-1]
    ema, avg = find_ema(learn), find_averager(learn)
    summary = {"complete": True, "run_name": cfg.name, "backbone": cfg.backbone, "fold": cfg.fold,
               **scores(y, oof), "weights_from": avg.method if avg else cfg.best_epoch,
               "weights_epoch": (last if cfg.best_epoch == "last" else best)["epoch"],
               "monitor": cfg.monitor, "best_epoch": best["epoch"], "last_epoch": last["epoch"],
               "valid_best": {k: best[k] for k in VALID_SCORES}, "valid_last": {k: last[k] for k in VALID_SCORES},
               "ema": ema.describe() if ema else None, "averaging": avg.describe(learn.model) if avg else None,
               "folds_sha1": folds_hash(run.folds),
               "minutes": round(sum(h["seconds"] for h in run.history) / 60, 2), "epochs": run.history}
    return full_summary(summary) if cfg.full_data else summary


def finish_run(run: Run, preds: RunPredictions, summary: dict) -> dict:
    """Write the run's files in this order: oof.csv (not for a full-data refit), test.csv, curves.png,
    env.json and, last, metrics.json (``summary``: it marks the run complete); then send ``summary``
    to the tracker (``tracker``) and back the run up (``sync_to``; raises when that fails, the run
    staying complete). Returns ``summary``."""
    cfg = run.cfg
    if not cfg.full_data:  # a full-data refit has no OOF: its scored rows are training images (lib.predict.refit)
        write_csv(run.dir / RunDir.OOF, preds.oof)
    write_csv(run.dir / RunDir.TEST, preds.test)
    plt.close(plot_curves(run.history, save=run.dir / RunDir.CURVES))  # saved only; the notebook draws its own
    write_json(run.dir / RunDir.ENV, {**environment(cfg.seed, str(preds.device)), **preds.precision.record()})
    write_json(run.dir / RunDir.METRICS, summary)  # last: marks the run complete
    if cfg.tracker != "none":
        finish_tracking(cfg, summary)
    if cfg.sync_to:
        final_backup(run.dir, cfg.sync_to)  # a failed push fails the run: its results must not stay here only
    return summary


def train_fold(cfg: TrainConfig) -> dict:
    """setup_run + fit + write_predictions in one call (scripts, benchmarks). Returns metrics.json's content."""
    run = setup_run(cfg)
    try:
        fit(run)
        return write_predictions(run)
    finally:
        run.release()


def lr_find(run: Run):
    """fastai's learning-rate finder on this run's model (weights are restored afterwards; the EMA
    is left out so the sweep does not leak into it). Returns fastai's suggestion (``.valley``)."""
    ema = find_ema(run.learn)
    with run.learn.removed_cbs([ema] if ema else []), cudnn_autotuned(run):
        return run.learn.lr_find()
