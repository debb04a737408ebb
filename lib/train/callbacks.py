"""fastai callbacks the kit adds: EMA, per-epoch reseeding, a fine-tune's frozen body, MixUp-or-CutMix,
and the run recorder that scores every epoch, keeps the last (or the best) epoch's weights and writes
the resumable state.
"""
from __future__ import annotations

import random
import time

import numpy as np
import torch
from fastai.callback.core import Callback
from fastai.callback.mixup import CutMix, MixHandler, MixUp
from fastai.learner import AvgSmoothLoss
from timm.utils import ModelEmaV3

from lib.core.choices import MONITORS, direction
from lib.core.io import clock
from lib.core.metrics import scores
from lib.model.optim import body_parameters
from lib.train.averaging import find_averager
from lib.train.distributed import unwrap


def best_record(history: list, monitor: str) -> dict | None:
    """The epoch record with the best ``monitor`` (earliest on ties); None for an empty history."""
    if monitor not in MONITORS:
        raise ValueError(f"monitor {monitor!r}: choose one of {sorted(MONITORS)}")
    if not history:
        return None
    return max(history, key=lambda h: (direction(monitor) * h[monitor], -h["epoch"]))


class ReseedEachEpoch(Callback):
    """Seed every random source from (seed, epoch) at the start of each epoch.

    Shuffling (the fastai DataLoader's own ``rng``), augmentation (``ImageDataset.epoch``), MixUp,
    dropout: an epoch then depends on its number and the weights only, so a run resumed at epoch k
    replays epochs k.. exactly as an uninterrupted one would (on CPU).
    """
    order = -10

    def __init__(self, seed: int):
        self.seed = seed

    def before_epoch(self):
        s = self.seed * 10_007 + self.epoch
        torch.manual_seed(s), random.seed(s), np.random.seed(s % 2**32)
        self.dls.train.rng = random.Random(s)
        self.dls.train.dataset.epoch = self.epoch


class FreezeBody(Callback):
    """fastai's ``fine_tune`` freeze for the first ``epochs`` epochs of a run: after every backward the
    body's gradients (``lib.model.optim.body_parameters``: all but the head and the norm layers) are
    dropped, so the optimizer leaves those weights as they are (torch's and timm's optimizers skip a
    parameter without a gradient: no step, no weight decay) while the head and the norms train. Decided
    per epoch from its number, so a resumed run freezes exactly the epochs an uninterrupted one did.
    Dropping gradients rather than switching ``requires_grad`` off leaves DDP (which registers its
    parameters once), compiled graphs and the optimizer's groups as they are; the backward pass costs
    what it costs unfrozen."""
    order = 0

    def __init__(self, epochs: int):
        self.epochs = epochs

    def before_fit(self):
        self.body = body_parameters(unwrap(self.learn.model))

    def after_backward(self):
        if self.epoch < self.epochs:
            for p in self.body:
                p.grad = None


def ema_decay(epochs: float, steps_per_epoch: float) -> float:
    """The per-step decay of an EMA that averages over about ``epochs`` epochs of ``steps_per_epoch``
    optimizer steps: 1 - 1 / (epochs x steps_per_epoch) (an EMA of decay d weighs about 1 / (1 - d)
    steps), 0 when that is under one step."""
    return max(0.0, 1.0 - 1.0 / (epochs * steps_per_epoch))


def ema_horizon(decay: float, steps_per_epoch: float) -> float:
    """The epochs an EMA of per-step ``decay`` averages over: 1 / ((1 - decay) x steps_per_epoch)."""
    return 1.0 / ((1.0 - decay) * steps_per_epoch)


class EMA(Callback):
    """Exponential moving average of the weights (timm ``ModelEmaV3``), updated after each optimizer step.

    The EMA weights are the ones validated, kept and predicted. Its per-step decay is ``decay`` or,
    from a horizon of ``epochs``, ``ema_decay(epochs, steps_per_epoch)`` with steps_per_epoch = training
    batches / ``grad_accum``. Warm-up: timm's formula decay_t = min(decay, 1 - t^-power) at the t-th update
    (``get_decay``: 1 - (1 + (t - 1) / gamma)^-power, gamma 1), here with power 1: a plain running mean
    of the weights until the horizon is reached (t = 1 / (1 - decay)), the set decay from there on.
    timm's default power 2/3 reaches 0.997 only after 6,100 updates, 0.999 after 31,600 and 0.9998
    after 354,000: on a 7,500-step run ``ema: 0.9998`` ended at 0.9974, as 0.999 did.
    ``record()`` gives the decay of the epoch's last update and the horizon it implies (metrics.json).
    """
    order = 60  # after the optimizer step

    def __init__(self, decay: float | None = None, epochs: float | None = None, grad_accum: int = 1):
        if (decay is None) == (epochs is None):
            raise ValueError(f"EMA: give a per-step decay or a horizon in epochs, one of them (got {decay}, {epochs})")
        self.target, self.epochs, self.grad_accum = decay, epochs, grad_accum
        self.model_ema, self.last_decay = None, None

    @property
    def steps_per_epoch(self) -> float:
        """Optimizer steps per epoch: the training batches of an epoch over ``grad_accum``."""
        return len(self.learn.dls.train) / self.grad_accum

    @property
    def decay(self) -> float:
        """The per-step decay after warm-up."""
        return self.target if self.target is not None else ema_decay(self.epochs, self.steps_per_epoch)

    def before_fit(self):
        if self.model_ema is None:
            self.model_ema = ModelEmaV3(self.learn.model, decay=self.decay, use_warmup=True, warmup_power=1.0)

    def after_cancel_step(self):
        self._cancelled = True  # the optimizer step was skipped (e.g. fp16 overflow): nothing to average

    def after_step(self):
        if self.training and not getattr(self, "_cancelled", False):
            t = (self.epoch * self.n_iter + self.iter) // self.grad_accum + 1  # this update's number, from 1
            self.last_decay = self.model_ema.get_decay(t)
            self.model_ema.update(unwrap(self.learn.model), step=t)
        self._cancelled = False

    def describe(self) -> dict:
        """The EMA as set: per-step decay, horizon (epochs) and optimizer steps per epoch."""
        d, n = self.decay, self.steps_per_epoch
        return {"decay": d, "horizon_epochs": ema_horizon(d, n), "steps_per_epoch": n}

    def record(self) -> dict:
        """The decay of the last update so far and the horizon (epochs) it implies; {} before any."""
        if self.last_decay is None:
            return {}
        return {"ema_decay": self.last_decay, "ema_horizon_epochs": ema_horizon(self.last_decay, self.steps_per_epoch)}

    def before_validate(self):
        self._train_model, self.learn.model = self.learn.model, self.model_ema.module

    def after_validate(self):
        self.learn.model = self._train_model


def find_ema(learn) -> EMA | None:
    """The Learner's EMA callback, if it has one."""
    return next((cb for cb in learn.cbs if isinstance(cb, EMA)), None)


class MixUpCutMix(MixHandler):
    """Per batch, CutMix with probability ``switch_prob`` else MixUp (both with soft-target losses)."""

    def __init__(self, mixup_alpha: float = 0.4, cutmix_alpha: float = 1.0, switch_prob: float = 0.5):
        super().__init__(mixup_alpha)
        self.mix, self.cut, self.switch_prob = MixUp(mixup_alpha), CutMix(cutmix_alpha), switch_prob

    def before_batch(self):
        cb = self.cut if torch.rand(1).item() < self.switch_prob else self.mix
        cb.learn, cb.stack_y = self.learn, self.stack_y
        cb.before_batch()
        self.lam, self.yb1 = cb.lam, cb.yb1


class CpuAutocast(Callback):
    """bfloat16 autocast for the forward pass and loss on the CPU (fastai's ``MixedPrecision`` is
    CUDA-only). Worth it on CPUs with AMX or AVX512-BF16; no loss scaling is needed for bfloat16."""
    order = 10
    _ctx = None

    def before_batch(self):
        self._ctx = torch.autocast("cpu", dtype=torch.bfloat16)
        self._ctx.__enter__()

    def after_pred(self):
        self.learn.pred = self.pred.float()

    def after_loss(self):
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)
            self._ctx = None

    def after_cancel_batch(self):  # a batch cancelled before its loss must not leave autocast on
        self.after_loss()


class DeviceSmoothLoss(AvgSmoothLoss):
    """fastai's smoothed training loss kept on the loss's device: fastai's own copies it to the CPU
    every batch, which makes the host wait for the GPU at each step."""

    def accumulate(self, learn):
        self.count += 1
        loss = learn.loss.detach().float().mean()
        self.val = torch.lerp(loss, self.val.to(loss.device), self.beta)


class RunRecorder(Callback):
    """Score each epoch on the validation fold, keep the weights, save the resumable state.

    ``save_state(epoch, record)`` and ``save_weights(model)`` are given by the run (they write files
    atomically); ``history`` holds one dict per completed epoch (with EMA: its decay, ``EMA.record``).
    ``keep`` "last" saves every epoch's weights (EMA's when on), "monitor" only a new best epoch's by
    ``monitor``. Stops early after ``patience`` epochs without improvement of ``monitor`` either way.
    """
    order = 65  # after EMA has swapped its weights back

    def __init__(self, num_classes: int, monitor: str, save_state, save_weights, history=None,
                 start_epoch: int = 0, patience: int | None = None, verbose: bool = True, keep: str = "last"):
        if monitor not in MONITORS:
            raise ValueError(f"monitor {monitor!r}: choose one of {sorted(MONITORS)}")
        if keep not in ("last", "monitor"):
            raise ValueError(f"keep {keep!r}: choose last or monitor")
        self.num_classes, self.monitor, self.patience, self.verbose = num_classes, monitor, patience, verbose
        self.save_state, self.save_weights, self.keep = save_state, save_weights, keep
        self.history, self.start_epoch = list(history or []), start_epoch

    @property
    def best(self) -> dict | None:
        return best_record(self.history, self.monitor)

    def before_epoch(self):
        self.t0, self.train_losses, self.valid_losses, self.probs, self.ys = time.time(), [], [], [], []

    def after_batch(self):
        # kept on the device until the epoch ends: a per-batch .item() would make the host wait for
        # the GPU every step
        n = len(self.yb[0])
        if self.training:
            self.train_losses.append((self.loss.detach() * n, n))
            self.img_size = int(self.xb[0].shape[-1])  # what this epoch trained at (lib.train.stages changes it)
        else:
            self.valid_losses.append((self.loss.detach() * n, n))
            self.probs.append(torch.softmax(self.pred.detach().float(), 1))
            self.ys.append(self.yb[0].detach())

    def after_epoch(self):
        if self.epoch < self.start_epoch or not self.ys:  # skipped while resuming
            return
        probs, y = torch.cat(self.probs).cpu().numpy().astype(np.float64), torch.cat(self.ys).cpu().numpy()
        if not np.isfinite(probs).all():
            cpu_bf16 = any(isinstance(cb, CpuAutocast) for cb in self.learn.cbs)
            raise FloatingPointError(f"epoch {self.epoch + 1}: the model's outputs are NaN/inf (the training loss "
                                     f"diverged); lower lr, add grad_clip, or check the data"
                                     + ("; this run trains in bf16 on the CPU, where oneDNN's AMX kernels have given "
                                        "non-finite gradients for tiny feature maps (a stride-2 conv on 1x1): try "
                                        "precision fp32 or a larger img_size" if cpu_bf16 else ""))
        rec = {"epoch": self.epoch, "train_loss": _mean(self.train_losses), "valid_loss": _mean(self.valid_losses),
               **scores(y, probs), "lr": float(self.opt.hypers[-1]["lr"]), "img_size": self.img_size,
               "seconds": round(time.time() - self.t0, 2)}
        ema = find_ema(self.learn)
        if ema:
            rec.update(ema.record())
        before = self.best
        self.history.append(rec)
        improved = self.best is rec
        averager = find_averager(self.learn)
        if averager:  # sees the scored epoch before the state (which keeps its average) is saved
            averager.add_epoch(rec, unwrap(self.learn.model))
        if improved or self.keep == "last":
            self.save_weights(ema.model_ema.module if ema else unwrap(self.learn.model))
        self.save_state(self.epoch + 1, self.history)
        if self.verbose:
            timed = [h["seconds"] for h in self.history[len(self.history) - (self.epoch + 1 - self.start_epoch):]]
            eta = (self.n_epoch - self.epoch - 1) * sum(timed) / len(timed)  # this session's epochs
            print(f"epoch {self.epoch + 1}/{self.n_epoch}  train {rec['train_loss']:.4f}  "
                  f"valid {rec['valid_loss']:.4f}  "
                  f"log_loss {rec['log_loss']:.4f}  acc {rec['accuracy']:.4f}  f1 {rec['f1_macro']:.4f}  "
                  f"{rec['seconds']:.1f}s  eta {clock(eta)}{'  *' if improved else ''}", flush=True)
        if self.patience and before is not None and not improved:
            since = self.epoch - self.best["epoch"]
            if since >= self.patience:
                if self.verbose:
                    print(f"early stop: no {self.monitor} gain for {since} epochs", flush=True)
                self.learn.stop_training = True  # StopWhenAsked ends the fit (on every rank under DDP)


def _mean(pairs) -> float:
    """Sample-weighted mean of (batch loss x batch size, batch size) pairs."""
    n = sum(k for _, k in pairs)
    return float(torch.stack([v.float() for v, _ in pairs]).sum()) / n if n else float("nan")
