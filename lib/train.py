"""One backbone on one fold with fastai: the run, its artifacts, resume.

    run = setup_run(data_dir="data/fmnist", backbone="resnet18", fold=0, ...)   # plain arguments
    fit(run)        # trains (or resumes from the last completed epoch, or skips a finished run)
    predict(run)    # OOF and test probabilities from the best weights, written atomically

A run lives in ``runs/<run_name>/``: params.yaml, state.pt (resumable: weights, optimizer, EMA,
history), model.safetensors (best weights), metrics.json, oof.csv, test.csv, curves.png, env.json.
``metrics.json`` with ``"complete": true`` is written last: its presence means the run is done.
"""
from __future__ import annotations

import copy
import json
import platform
import shutil
import subprocess
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import safetensors.torch
import torch
import yaml
from fastai.callback.progress import ProgressCallback
from fastai.callback.schedule import ParamScheduler, combined_cos
from fastai.callback.training import GradientAccumulation, GradientClip
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.learner import Learner
from fastai.optimizer import OptimWrapper
from timm.optim import param_groups_weight_decay

from .augment import get_augment
from .backbones import create_backbone
from .callbacks import EMA, CpuAutocast, DeviceSmoothLoss, MixUpCutMix, ReseedEachEpoch, RunRecorder, best_record
from .data import Competition, make_folds, scan_competition
from .dataset import ImageDataset, build_cache
from .device import cpu_name, default_num_workers, pick_device, use_autocast
from .io import atomic_path, read_json, write_csv, write_json, write_yaml
from .losses import get_loss, inverse_frequency_weights
from .paths import repo_root, resolve
from .runs import run_complete
from .tta import predict_tta

PRECISIONS = ("auto", "fp32", "bf16")
# parameters that may change between an interrupted run and its resume without invalidating it
RUNTIME_PARAMS = {"resume", "force", "num_workers", "device", "progress", "verbose", "runs_dir"}


@dataclass
class Run:
    """Everything one training run holds. ``dir`` is ``runs/<run_name>/``."""
    dir: Path
    params: dict
    comp: Competition
    folds: pd.DataFrame
    learn: Learner | None = None
    train_ds: ImageDataset | None = None
    valid_ds: ImageDataset | None = None
    test_ds: ImageDataset | None = None
    valid_rows: pd.DataFrame | None = None
    data_cfg: dict | None = None
    start_epoch: int = 0
    history: list | None = None
    num_workers: int = 0
    writer: ThreadPoolExecutor | None = None  # writes checkpoints in the background while fit runs
    pending: list = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return run_complete(self.dir)


def setup_run(data_dir: str = "data/fmnist", backbone: str = "resnet18", fold: int = 0, n_folds: int = 5,
              img_size: int = 224, batch_size: int = 64, epochs: int = 10, lr: float = 1e-3,
              weight_decay: float = 0.05, schedule: str = "onecycle", warmup_pct: float = 0.1,
              loss: str = "ce", loss_args: dict | None = None, aug: str = "light", mixup: float = 0.0,
              cutmix: float = 0.0, ema: float | None = None, pretrained: str = "none", pool: str = "avg",
              drop_rate: float = 0.0, drop_path_rate: float = 0.0, grad_accum: int = 1,
              grad_clip: float | None = None, monitor: str = "log_loss", patience: int | None = None,
              seed: int = 42, num_workers: int | None = None, device: str | None = None,
              run_name: str | None = None, runs_dir: str = "runs", max_samples: int | None = None,
              exclude_ids: str | None = None, group_col: str | None = None, scan_args: dict | None = None,
              model_kwargs: dict | None = None, precision: str = "auto", cache: bool = True, resume: bool = True,
              force: bool = False, progress: bool = True, verbose: bool = True) -> Run:
    """Resolve parameters, scan the data, build datasets, model and Learner for one fold.

    ``ema``: decay of the weight EMA (e.g. 0.999) or None. ``exclude_ids``: CSV with an ``id``
    column (e.g. noisy labels from 03_oof_analysis) removed from this fold's training images only.
    ``max_samples`` caps train and valid sizes (smoke runs). Sizes are pixels, ``lr`` the peak.
    ``group_col`` splits folds with StratifiedGroupKFold on that column of the labels CSV (e.g. the
    duplicate groups from 01_eda); ``scan_args`` go to ``scan_competition`` (labels_csv, id_col,
    label_col, path_col) for competitions that ship a labels table. ``model_kwargs`` go to timm's model
    constructor (see ``create_backbone``). ``precision``: "auto" (bf16 or fp16 autocast on CUDA, fp32
    elsewhere), "fp32", or "bf16" (autocast on CUDA or CPU; on a CPU with AMX it trains ~1.5x faster).
    """
    params = {k: v for k, v in locals().items()}
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose one of {PRECISIONS}")
    params["run_name"] = run_name = run_name or f"{backbone}_f{fold}"
    run_dir = resolve(runs_dir) / run_name
    if force and run_dir.exists():
        shutil.rmtree(run_dir)
    _check_params(run_dir, params)
    comp = scan_competition(resolve(data_dir), group_col=group_col, verbose=verbose, **(scan_args or {}))
    folds = make_folds(comp, n_folds=n_folds, seed=42, group_col=group_col)
    run = Run(run_dir, params, comp, folds)
    if run.complete:
        if verbose:
            print(f"{run_dir}: already complete (force=True retrains)")
        return run
    run_dir.mkdir(parents=True, exist_ok=True)
    write_yaml(run_dir / "params.yaml", params)

    dev = pick_device(device, verbose=verbose)
    torch.manual_seed(seed)
    model, run.data_cfg = create_backbone(backbone, comp.num_classes, pretrained=pretrained, pool=pool,
                                          drop_rate=drop_rate, drop_path_rate=drop_path_rate,
                                          model_kwargs=model_kwargs)
    _check_input_size(model, backbone, img_size)
    if fold not in set(folds["fold"]):
        raise ValueError(f"fold {fold} not in 0..{n_folds - 1}")
    tr = folds[folds["fold"] != fold]
    va = folds[folds["fold"] == fold]
    if exclude_ids:
        table = pd.read_csv(resolve(exclude_ids), dtype={"id": str})
        if "id" not in table.columns:
            raise ValueError(f"{exclude_ids}: needs an 'id' column (has {list(table.columns)}); 03_oof_analysis's "
                             "noisy_labels.csv and 01_eda's duplicates.csv have one")
        drop = set(table["id"])
        if verbose:
            print(f"excluding {len(set(tr['id']) & drop)} train images listed in {exclude_ids}")
        tr = tr[~tr["id"].isin(drop)]
    if max_samples:
        tr = tr.sample(min(max_samples, len(tr)), random_state=seed)
        va = va.sample(min(max_samples, len(va)), random_state=seed)
    run.valid_rows = va.reset_index(drop=True)
    mean, std = run.data_cfg["mean"], run.data_cfg["std"]

    def dataset(split: str, table: pd.DataFrame, rows: pd.DataFrame, aug_name: str, targets=True):
        """Images of ``rows`` (a subset of ``table``), read from the split's pre-resized cache."""
        arr = build_cache(table["path"].tolist(), img_size, comp.root / "cache", split, progress=progress) if cache else None
        pos = pd.Series(np.arange(len(table)), index=table["id"].to_numpy())
        return ImageDataset(rows["path"], rows["target"] if targets else None, get_augment(aug_name, img_size, mean, std),
                            img_size, arr, pos.loc[rows["id"]].to_numpy(), seed)

    run.train_ds = dataset("train", comp.train, tr, aug)
    run.valid_ds = dataset("train", comp.train, va, "none")
    run.test_ds = dataset("test", comp.test, comp.test, "none", targets=False)
    workers = default_num_workers(dev, num_workers)
    model.to(dev)  # fastai would move it to dls.device, which stays None on CUDA (see below)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its fastest kernels
        # fastai's to_device copies blocking, which waits for the GPU's queue every batch; copy from
        # pinned memory without blocking instead, so the next batch is ready while the GPU computes
        dl = partial(DataLoader, num_workers=workers, pin_memory=True, after_batch=ToDevice(dev))
    else:
        dl = partial(DataLoader, num_workers=workers, device=dev)
    run.num_workers = workers
    if len(run.train_ds) < batch_size:
        raise ValueError(f"batch_size {batch_size} is larger than the {len(run.train_ds)} training images of fold {fold}")
    dls = DataLoaders(dl(run.train_ds, bs=batch_size, shuffle=True, drop_last=True),
                      dl(run.valid_ds, bs=batch_size * 2), device=None if dev.type == "cuda" else dev)

    loss_args = dict(loss_args or {})
    if loss_args.get("weight") == "inverse_frequency":
        loss_args["weight"] = inverse_frequency_weights(np.bincount(tr["target"], minlength=comp.num_classes))
    # torch's multi-tensor AdamW (faster than fastai's per-parameter Python loop), with timm's split
    # of parameters: no weight decay on norms, biases and other 1-d tensors
    groups = param_groups_weight_decay(model, weight_decay)
    run.learn = Learner(dls, model, loss_func=get_loss(loss, **loss_args), splitter=lambda m: [g["params"] for g in groups],
                        opt_func=partial(OptimWrapper, opt=partial(torch.optim.AdamW, foreach=True)), wd=None,
                        path=run_dir, model_dir=".")
    run.learn.create_opt()
    for pg, g in zip(run.learn.opt.opt.param_groups, groups):
        pg["weight_decay"] = g["weight_decay"]
    cbs = [ReseedEachEpoch(seed)]
    if ema:
        cbs.append(EMA(ema))
    if mixup and cutmix:
        cbs.append(MixUpCutMix(mixup, cutmix))
    elif mixup or cutmix:
        from fastai.callback.mixup import CutMix, MixUp
        cbs.append(MixUp(mixup) if mixup else CutMix(cutmix))
    if grad_accum > 1:
        cbs.append(GradientAccumulation(n_acc=batch_size * grad_accum))
    if grad_clip:
        cbs.append(GradientClip(grad_clip))
    run.learn.add_cbs(cbs)
    if dev.type == "cuda":
        from fastai.callback.channelslast import ChannelsLast
        from fastai.callback.fp16 import AMPMode, MixedPrecision
        run.learn.add_cbs([ChannelsLast()])
        if precision != "fp32":
            bf16 = precision == "bf16" or torch.cuda.is_bf16_supported()
            run.learn.add_cbs([MixedPrecision(amp_mode=AMPMode.BF16 if bf16 else AMPMode.FP16)])
        run.learn.recorder.smooth_loss = DeviceSmoothLoss(beta=run.learn.recorder.smooth_loss.beta)
    elif precision == "bf16":
        from fastai.callback.channelslast import ChannelsLast
        run.learn.add_cbs([ChannelsLast(), CpuAutocast()])
    if not progress:
        run.learn.remove_cb(ProgressCallback)
        run.learn.logger = lambda *a, **k: None  # our recorder prints one line per epoch
    _load_state(run, resume, verbose)
    return run


class ToDevice:
    """``after_batch`` for fastai's DataLoader: move a batch to ``device`` without blocking the host."""

    def __init__(self, device):
        self.device = device

    def __call__(self, b):
        return tuple(t.to(self.device, non_blocking=True) for t in b)


def _check_input_size(model, backbone: str, img_size: int) -> None:
    """One forward pass on a blank image, so a size the architecture cannot take fails here, by name."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, img_size, img_size))
    except RuntimeError as e:
        raise ValueError(f"img_size {img_size} does not fit {backbone} ({str(e).splitlines()[0][:160]}); "
                         "try a larger img_size or a model made for small inputs") from e
    finally:
        model.train(was)


def _check_params(run_dir: Path, params: dict) -> None:
    """A run folder holds one set of parameters: resuming with other ones would mix two runs."""
    saved = run_dir / "params.yaml"
    if not saved.exists() or not (run_dir / "state.pt").exists():
        return  # nothing trained yet: a corrected rerun may change anything
    old = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
    diff = {k: (old.get(k), v) for k, v in params.items() if k not in RUNTIME_PARAMS and old.get(k) != v}
    if diff:
        raise ValueError(f"{run_dir} was run with other parameters {diff} (saved, now); pass force=True "
                         "to start it again, or give this run another run_name")


def _load_state(run: Run, resume: bool, verbose: bool) -> None:
    state_file = run.dir / "state.pt"
    run.history = []
    if not (resume and state_file.exists()):
        return
    state = torch.load(state_file, map_location="cpu", weights_only=True)
    run.learn.model.load_state_dict(state["model"])
    run.learn.opt.load_state_dict(state["opt"])
    if "ema" in state:
        ema = next(cb for cb in run.learn.cbs if isinstance(cb, EMA))
        ema.before_fit()
        ema.model_ema.module.load_state_dict(state["ema"])
    run.start_epoch, run.history = int(state["epoch"]), json.loads(state["history"])
    if verbose:
        print(f"resuming {run.dir.name} after epoch {run.start_epoch}/{run.params['epochs']}")


def _snapshot(state_dict: dict) -> dict:
    """A copy of a state dict that later training steps cannot change (tensors cloned)."""
    return copy.deepcopy({k: v.detach() if torch.is_tensor(v) else v for k, v in state_dict.items()})


def _flush(run: Run) -> None:
    """Wait for the checkpoint writes in flight; re-raise a failed one."""
    while run.pending:
        run.pending.pop(0).result()


def _save_best(run: Run, model) -> None:
    """Best weights so far to model.safetensors, written by the background writer."""
    _flush(run)
    sd = {k: v.contiguous() for k, v in _snapshot(model.state_dict()).items()}

    def write():
        with atomic_path(run.dir / "model.safetensors") as tmp:
            safetensors.torch.save_file(sd, str(tmp))
    run.pending.append(run.writer.submit(write))


def _save_state(run: Run, epoch: int, history: list) -> None:
    """The resumable state after ``epoch`` epochs. Tensors are copied now and written to disk in a
    background thread (in order, after the best weights), so training does not wait for the disk."""
    _flush(run)
    state = {"epoch": epoch, "model": _snapshot(run.learn.model.state_dict()),
             "opt": copy.deepcopy(run.learn.opt.state_dict()), "history": json.dumps(history)}
    ema = next((cb for cb in run.learn.cbs if isinstance(cb, EMA)), None)
    if ema:
        state["ema"] = _snapshot(ema.model_ema.module.state_dict())

    def write():
        with atomic_path(run.dir / "state.pt") as tmp:
            torch.save(state, tmp)
        write_json(run.dir / "metrics.json", {"complete": False, "epochs": history})
    run.pending.append(run.writer.submit(write))


def fit(run: Run) -> pd.DataFrame:
    """Train (resuming after the last completed epoch); returns the per-epoch metrics table."""
    p = run.params
    if run.complete:
        return pd.DataFrame(read_json(run.dir / "metrics.json")["epochs"])
    learn = run.learn
    rec = RunRecorder(run.comp.num_classes, p["monitor"], partial(_save_state, run), partial(_save_best, run),
                      run.history, run.start_epoch, p["patience"], p["verbose"])
    if p["schedule"] == "onecycle":
        scheds = {"lr": combined_cos(p["warmup_pct"], p["lr"] / 25, p["lr"], p["lr"] / 1e5)}
    elif p["schedule"] == "flat_cos":
        scheds = {"lr": combined_cos(0.75, p["lr"], p["lr"], p["lr"] / 1e5)}
    else:
        raise ValueError(f"schedule {p['schedule']!r}: choose onecycle or flat_cos")
    done = run.start_epoch >= p["epochs"] or _stopped_early(run)
    run.writer = ThreadPoolExecutor(1)
    try:
        if not done:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*upsample.*|.*lr_scheduler.*")
                learn.fit(p["epochs"], p["lr"], cbs=[ParamScheduler(scheds), rec], start_epoch=run.start_epoch)
    except KeyboardInterrupt:
        _flush(run)
        print(f"interrupted: epochs up to {len(rec.history)} are saved in {run.dir / 'state.pt'}; "
              "rerun the same command to resume", flush=True)
        raise
    finally:
        _flush(run)
        run.writer.shutdown()
    run.history = rec.history
    return pd.DataFrame(rec.history)


def _stopped_early(run: Run) -> bool:
    pat, hist = run.params["patience"], run.history or []
    if not pat or not hist:
        return False
    return hist[-1]["epoch"] - best_record(hist, run.params["monitor"])["epoch"] >= pat


def predict(run: Run, progress: bool | None = None) -> dict:
    """Predict the validation fold (OOF) and the test set with the best weights; write all artifacts.

    Returns the summary written to metrics.json (best epoch and its scores).
    """
    from .backbones import load_weights
    from .metrics import accuracy, f1_macro, log_loss

    if run.complete:
        return read_json(run.dir / "metrics.json")
    learn, comp, p = run.learn, run.comp, run.params
    load_weights(learn.model, run.dir / "model.safetensors")
    dev = next(learn.model.parameters()).device
    show = p["progress"] if progress is None else progress
    mk = partial(torch.utils.data.DataLoader, batch_size=p["batch_size"] * 2, num_workers=run.num_workers,
                 pin_memory=dev.type == "cuda")
    oof = predict_tta(learn.model, mk(run.valid_ds), ["identity"], dev, amp=use_autocast(dev, p["precision"]),
                      progress=show)
    test = (predict_tta(learn.model, mk(run.test_ds), ["identity"], dev, amp=use_autocast(dev, p["precision"]),
                      progress=show)
            if len(run.test_ds) else np.zeros((0, comp.num_classes)))
    y = run.valid_rows["target"].to_numpy()
    oof_df = pd.DataFrame(oof, columns=comp.classes)
    oof_df.insert(0, "target", y), oof_df.insert(0, "fold", p["fold"]), oof_df.insert(0, "id", run.valid_rows["id"].to_numpy())
    test_df = pd.DataFrame(test, columns=comp.classes)
    test_df.insert(0, "id", comp.test["id"].to_numpy())
    write_csv(run.dir / "oof.csv", oof_df)
    write_csv(run.dir / "test.csv", test_df)
    best = best_record(run.history, p["monitor"])
    summary = {"complete": True, "run_name": p["run_name"], "backbone": p["backbone"], "fold": p["fold"],
               "best_epoch": best["epoch"], "log_loss": log_loss(y, oof), "accuracy": accuracy(y, oof),
               "f1_macro": f1_macro(y, oof), "minutes": round(sum(h["seconds"] for h in run.history) / 60, 2),
               "epochs": run.history}
    import matplotlib.pyplot as plt
    plt.close(plot_curves(run.history, save=run.dir / "curves.png"))  # saved only; the notebook draws its own
    write_json(run.dir / "env.json", environment(p["seed"], str(dev)))
    write_json(run.dir / "metrics.json", summary)  # last: marks the run complete
    return summary


def plot_curves(history: list, save=None):
    """Loss and metric curves per epoch; saved to ``save`` (PNG) when given. Returns the figure."""
    import matplotlib.pyplot as plt

    h = pd.DataFrame(history)
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.6))
    if len(h):
        ep = h["epoch"] + 1
        ax[0].plot(ep, h["train_loss"], "o-", label="train loss")
        ax[0].plot(ep, h["valid_loss"], "o-", label="valid loss")
        ax[0].plot(ep, h["log_loss"], "s--", label="valid log loss")
        ax[1].plot(ep, h["accuracy"], "o-", label="accuracy")
        ax[1].plot(ep, h["f1_macro"], "o-", label="macro F1")
    for a, t in zip(ax, ("loss", "validation metrics")):
        a.set_xlabel("epoch"), a.set_title(t), a.grid(alpha=0.3), a.legend()
    fig.tight_layout()
    if save:
        with atomic_path(save) as tmp:
            fig.savefig(tmp, dpi=90, format="png")
    return fig


def environment(seed: int, device: str) -> dict:
    """Versions, device, git commit and seed: what a run needs to be traced and repeated."""
    import albumentations
    import fastai
    import timm

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_root(), capture_output=True,
                                text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
            "timm": timm.__version__, "fastai": fastai.__version__, "albumentations": albumentations.__version__,
            "device": device, "cpu": cpu_name(), "cuda": torch.version.cuda, "threads": torch.get_num_threads(),
            "git_commit": commit, "seed": seed}


def train_fold(**params) -> dict:
    """setup_run + fit + predict in one call (scripts, benchmarks). Returns metrics.json's content."""
    run = setup_run(**params)
    fit(run)
    return predict(run)


def lr_find(run: Run):
    """fastai's learning-rate finder on this run's model (weights are restored afterwards; the EMA
    is left out so the sweep does not leak into it). Returns fastai's suggestion (``.valley``)."""
    ema = [cb for cb in run.learn.cbs if isinstance(cb, EMA)]
    with run.learn.removed_cbs(ema):
        return run.learn.lr_find()
