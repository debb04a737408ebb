"""Weight averaging over a run's epochs: SWA over the last epochs, or the k best epochs' weights.

    cfg = TrainConfig(..., swa_epochs=3)              # or swa_epochs=3, swa_lr=1e-3; or average_top_k=3
    run = setup_run(cfg); fit(run)                    # fit ends with finish_averaging(run)
    write_predictions(run)                            # OOF and test of the averaged weights

- ``swa_epochs: k`` (SWA): the weights at the end of each of the last k epochs join a running mean
  (``torch.optim.swa_utils.AveragedModel``). With ``swa_lr`` those k epochs run at that constant lr
  after the schedule, which then anneals over the first ``epochs - k`` (classic SWA); without it they
  are the last k epochs of the schedule itself (checkpoint averaging of the last k epochs). Which
  epochs are averaged is fixed before training: the OOF of the average is an honest estimate, and the
  same recipe works where nothing is validated. The kit's recommended averaging.
- ``average_top_k: k``: the mean of the k best epochs' weights by ``monitor``. The epochs are picked
  on the very fold the average is then scored on, so its OOF is optimistic (as ``best_epoch:
  monitor``'s is); with a one-cycle schedule the best epochs are mostly the last ones anyway.

Either way BatchNorm statistics are then recomputed for the averaged weights over one pass of the
training data (``update_bn``, augmented, seeded; momentum-free mean), as the averaged weights'
activations differ from every epoch's. The averaged weights go to ``model.safetensors`` (so OOF,
test and re-prediction use them); per-epoch validation in the history is still the trained model's.
Not with EMA (one average of the weights at a time) nor ``best_epoch: monitor`` (the average decides
the weights kept); SWA not with ``patience`` (an early stop would cut the epochs it averages).
Resume is exact: ``state.pt`` keeps the running mean (SWA) or the k best epochs' weights (top-k).
"""
from __future__ import annotations

import copy
import random
from contextlib import nullcontext

import torch
from fastai.callback.core import Callback
from torch.optim.swa_utils import AveragedModel, update_bn

from lib.core.choices import direction
from lib.core.precision import amp_dtype
from lib.core.rundir import RunDir
from lib.model.backbones import save_weights
from lib.train.distributed import rank, unwrap


class WeightAverager(Callback):
    """Collects the epochs to average (fed by ``RunRecorder`` after it scored an epoch, before the
    resumable state is written): ``method`` "swa" averages every epoch from ``first_epoch`` on,
    "top_k" keeps the ``k`` best by ``monitor`` (copies on the CPU)."""

    def __init__(self, method: str, k: int, monitor: str, first_epoch: int = 0, swa_lr: float | None = None):
        self.method, self.k, self.monitor, self.first_epoch, self.swa_lr = method, k, monitor, first_epoch, swa_lr
        self.swa, self.kept = None, []  # SWA's AveragedModel; top-k's [{"record", "weights"}]

    @property
    def epochs(self) -> list[int]:
        """The epochs averaged so far, in order."""
        if self.method == "swa":
            return list(range(self.first_epoch, self.first_epoch + self.n_averaged))
        return sorted(e["record"]["epoch"] for e in self.kept)

    @property
    def n_averaged(self) -> int:
        return int(self.swa.n_averaged) if self.swa is not None else len(self.kept)

    def add_epoch(self, record: dict, model: torch.nn.Module) -> None:
        """Epoch ``record`` (its history entry) ended with ``model``'s weights."""
        if self.method == "swa":
            if record["epoch"] >= self.first_epoch:
                if self.swa is None:
                    self.swa = AveragedModel(model)
                self.swa.update_parameters(model)
            return
        weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        sign = direction(self.monitor)  # best first, the earliest on ties (as best_record)
        self.kept = sorted(self.kept + [{"record": record, "weights": weights}],
                           key=lambda e: (-sign * e["record"][self.monitor], e["record"]["epoch"]))[:self.k]

    def averaged_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """A copy of ``model`` holding the average (BatchNorm statistics not yet recomputed)."""
        if not self.n_averaged:
            raise RuntimeError(f"{self.method}: no epoch was averaged (training ended before its epochs)")
        if self.method == "swa":
            return copy.deepcopy(self.swa.module)
        first = self.kept[0]["weights"]
        mean = {k: (torch.stack([e["weights"][k].double() for e in self.kept]).mean(0).to(v.dtype)
                    if v.is_floating_point() else v) for k, v in first.items()}
        out = copy.deepcopy(model)
        out.load_state_dict(mean)
        return out

    def state_dict(self) -> dict:
        """What a resume needs, copied now (the state is written in the background)."""
        if self.method == "swa":
            sd = self.swa.state_dict() if self.swa is not None else {}
            return {"method": "swa", "swa": {k: v.detach().clone() for k, v in sd.items()}}
        return {"method": "top_k", "kept": list(self.kept)}

    def load_state_dict(self, state: dict, model: torch.nn.Module) -> None:
        if state["method"] != self.method:
            raise ValueError(f"state.pt averaged by {state['method']}, the recipe by {self.method}")
        if self.method == "top_k":
            self.kept = list(state["kept"])
        elif state["swa"]:
            self.swa = AveragedModel(model)
            self.swa.load_state_dict(state["swa"])

    def describe(self, model: torch.nn.Module) -> dict:
        """For metrics.json: method, the epochs averaged, and whether BatchNorm was recomputed."""
        out = {"method": self.method, "epochs": self.epochs, "bn_updated": has_batchnorm(model)}
        if self.method == "swa":
            out["swa_lr"] = self.swa_lr
        else:
            out |= {"k": self.k, "monitor": self.monitor}
        return out


def averaging_callbacks(cfg) -> list:
    """[WeightAverager] when the recipe averages epochs, else []."""
    if cfg.swa_epochs:
        return [WeightAverager("swa", cfg.swa_epochs, cfg.monitor, cfg.epochs - cfg.swa_epochs, cfg.swa_lr)]
    if cfg.average_top_k:
        return [WeightAverager("top_k", cfg.average_top_k, cfg.monitor)]
    return []


def find_averager(learn) -> WeightAverager | None:
    """The Learner's WeightAverager, if it has one."""
    return next((cb for cb in learn.cbs if isinstance(cb, WeightAverager)), None)


def has_batchnorm(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def recompute_batchnorm(model: torch.nn.Module, loader, seed: int, epoch: int, dtype=None) -> bool:
    """BatchNorm running statistics of ``model`` as the mean over one pass of ``loader`` (the fastai
    training loader: augmented images, shuffled as epoch ``epoch`` of ``seed``, so a rerun gives the
    same statistics); ``dtype`` autocasts the forward passes. Returns whether there was any BatchNorm."""
    if not has_batchnorm(model):
        return False
    torch.manual_seed(seed), random.seed(seed)
    loader.rng = random.Random(seed * 10_007 + epoch)
    loader.dataset.epoch = epoch
    device = next(model.parameters()).device
    with torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext():
        update_bn(loader, model)
    return True


def finish_averaging(run) -> None:
    """The averaged weights of a trained run, BatchNorm recomputed, to its ``model.safetensors``
    (nothing without averaging, or on a data-parallel rank other than 0). Safe to repeat."""
    avg = find_averager(run.learn)
    if avg is None or rank() != 0:
        return
    model = avg.averaged_model(unwrap(run.learn.model))
    dtype = amp_dtype(next(model.parameters()).device, run.cfg.precision)
    recompute_batchnorm(model, run.learn.dls.train, run.cfg.seed, run.cfg.epochs, dtype)
    save_weights(model, run.dir / RunDir.WEIGHTS)
    if run.cfg.verbose:
        print(f"{avg.method}: averaged epochs {[e + 1 for e in avg.epochs]} into model.safetensors", flush=True)
