"""fastai callbacks the kit adds: EMA, per-epoch reseeding, MixUp-or-CutMix, and the run recorder
that scores every epoch, keeps the best weights and writes the resumable state.
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

from .config import MONITORS
from .distributed import unwrap
from .metrics import accuracy, f1_macro, log_loss


def best_record(history: list, monitor: str) -> dict | None:
    """The epoch record with the best ``monitor`` (earliest on ties); None for an empty history."""
    if monitor not in MONITORS:
        raise ValueError(f"monitor {monitor!r}: choose one of {sorted(MONITORS)}")
    if not history:
        return None
    sign = 1 if MONITORS[monitor] else -1
    return max(history, key=lambda h: (sign * h[monitor], -h["epoch"]))


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


class EMA(Callback):
    """Exponential moving average of the weights (timm ``ModelEmaV3``, decay warm-up on).

    The EMA weights are the ones validated, selected as best and saved.
    """
    order = 60  # after the optimizer step

    def __init__(self, decay: float = 0.9998):
        self.decay, self.model_ema = decay, None

    def before_fit(self):
        if self.model_ema is None:
            self.model_ema = ModelEmaV3(self.learn.model, decay=self.decay, use_warmup=True)

    def after_cancel_step(self):
        self._cancelled = True  # gradient accumulation skipped the optimizer step: nothing to average

    def after_step(self):
        if self.training and not getattr(self, "_cancelled", False):
            self.model_ema.update(unwrap(self.learn.model), step=self.epoch * self.n_iter + self.iter)
        self._cancelled = False

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
    """Score each epoch on the validation fold, keep the best weights, save the resumable state.

    ``save_state(epoch, record)`` and ``save_best(model)`` are given by the run (they write files
    atomically); ``history`` holds one dict per completed epoch. Stops early after ``patience``
    epochs without improvement of ``monitor``.
    """
    order = 65  # after EMA has swapped its weights back

    def __init__(self, num_classes: int, monitor: str, save_state, save_best, history=None,
                 start_epoch: int = 0, patience: int | None = None, verbose: bool = True):
        if monitor not in MONITORS:
            raise ValueError(f"monitor {monitor!r}: choose one of {sorted(MONITORS)}")
        self.num_classes, self.monitor, self.patience, self.verbose = num_classes, monitor, patience, verbose
        self.save_state, self.save_best = save_state, save_best
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
        else:
            self.valid_losses.append((self.loss.detach() * n, n))
            self.probs.append(torch.softmax(self.pred.detach().float(), 1))
            self.ys.append(self.yb[0].detach())

    def after_epoch(self):
        if self.epoch < self.start_epoch or not self.ys:  # skipped while resuming
            return
        probs, y = torch.cat(self.probs).cpu().numpy().astype(np.float64), torch.cat(self.ys).cpu().numpy()
        if not np.isfinite(probs).all():
            raise FloatingPointError(f"epoch {self.epoch + 1}: the model's outputs are NaN/inf (the training loss "
                                     f"diverged); lower lr, add grad_clip, or check the data")
        rec = {"epoch": self.epoch, "train_loss": _mean(self.train_losses), "valid_loss": _mean(self.valid_losses),
               "log_loss": log_loss(y, probs), "accuracy": accuracy(y, probs), "f1_macro": f1_macro(y, probs),
               "lr": float(self.opt.hypers[-1]["lr"]), "seconds": round(time.time() - self.t0, 2)}
        before = self.best
        self.history.append(rec)
        improved = self.best is rec
        if improved:
            ema = find_ema(self.learn)
            self.save_best(ema.model_ema.module if ema else unwrap(self.learn.model))
        self.save_state(self.epoch + 1, self.history)
        if self.verbose:
            print(f"epoch {self.epoch + 1}/{self.n_epoch}  train {rec['train_loss']:.4f}  "
                  f"valid {rec['valid_loss']:.4f}  "
                  f"log_loss {rec['log_loss']:.4f}  acc {rec['accuracy']:.4f}  f1 {rec['f1_macro']:.4f}  "
                  f"{rec['seconds']:.1f}s{'  *' if improved else ''}", flush=True)
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
