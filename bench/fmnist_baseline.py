"""The in-run baseline of `make bench-fmnist`: one plain model, as a competitor would write it with
fastai's defaults, trained on all the training images with the recipe's epoch budget.

    python -m bench.fmnist_baseline --data-dir data/fmnist_full --params params/fmnist/resnet64.yaml \
        --out runs/fmnist/baseline

What it takes from the recipe: the backbone (timm name and ``model_kwargs``), ``img_size`` and
``epochs``. Everything else is fastai's default path: ``ImageDataLoaders.from_folder`` with
``Resize`` and ``aug_transforms()``, ``vision_learner`` (its concat-pool head, pretrained=False),
``fit_one_cycle`` at fastai's default learning rate, batch size 64. Only the precision follows the
recipe (bf16 autocast on the CPU when it asks for it; fastai's own mixed precision is CUDA-only), so
that the comparison is about the method, not the arithmetic. No folds, no validation
split (every labelled image is trained on), no TTA, no calibration. Writes ``submission.csv`` (the
competition's ids and columns) and ``baseline.json`` (what was run, seconds) to ``--out``.

Equal compute (``--minutes M``, or ``--budget-from RUNS`` for the summed training minutes of the
grid's runs there): the same baseline with as many epochs as fit in that time, from the measured
time of one epoch (a timed pass over 20 batches, extrapolated; not counted in ``seconds``).
"""
from __future__ import annotations

import argparse
import sys
import time

import fastprogress.fastprogress
import numpy as np
import torch
from fastai.vision.all import (
    CategoryBlock,
    DataBlock,
    ImageBlock,
    IndexSplitter,
    Resize,
    aug_transforms,
    parent_label,
    vision_learner,
)

from lib.core.cli import command_parser
from lib.core.config import TrainConfig
from lib.core.io import write_json
from lib.core.paths import resolve
from lib.core.precision import choose_precision, cpu_capability
from lib.data.competition import open_competition
from lib.predict.submission import make_submission, write_submission
from lib.train.callbacks import CpuAutocast


def grid_minutes(runs_dir) -> float:
    """The summed training minutes of the completed runs in ``runs_dir`` (their metrics.json)."""
    from lib.core.rundir import find_runs
    runs = find_runs(runs_dir)
    if runs.empty:
        raise FileNotFoundError(f"{runs_dir}: no completed run to take the compute budget from")
    return float(runs["minutes"].sum())


def epochs_for(learn, minutes: float, n_batches: int = 20) -> tuple[int, float]:
    """(epochs, seconds per epoch): how many epochs of ``learn`` fit in ``minutes``, from the time of
    ``n_batches`` training steps (after one warm-up step), each from fetching its batch (decoding and
    fastai's augmentation, which an epoch pays too) to the optimiser step, scaled to the epoch's batch
    count."""
    import copy
    model, opt = copy.deepcopy(learn.model), None
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    it = iter(learn.dls.train)
    per_batch = []
    n_batches = min(n_batches, len(learn.dls.train) - 1)
    for k in range(n_batches + 1):
        t = time.perf_counter()
        xb, yb = next(it)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=any(isinstance(c, CpuAutocast) for c in learn.cbs)):
            loss = learn.loss_func(model(xb), yb)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if k:
            per_batch.append(time.perf_counter() - t)
    epoch = float(np.mean(per_batch)) * len(learn.dls.train)
    return max(1, int(minutes * 60 // epoch)), epoch


def run_baseline(data_dir: str, params: str, out: str, seed: int = 42, minutes: float | None = None) -> dict:
    """Train the baseline and write its submission; returns what baseline.json holds. With
    ``minutes``, the epoch count is the number that fits in that training time (``epochs_for``)."""
    cfg = TrainConfig.from_yaml(resolve(params))
    out = resolve(out)
    done = out / "baseline.json"
    comp = open_competition(data_dir)
    torch.manual_seed(seed)
    # folder-per-class, as fastai reads it; the class order is the competition's (classes.json)
    block = DataBlock(blocks=(ImageBlock, CategoryBlock(vocab=comp.classes, sort=False)),
                      get_items=lambda _: comp.train["path"].tolist(), get_y=parent_label,
                      splitter=IndexSplitter([]), item_tfms=Resize(cfg.img_size), batch_tfms=aug_transforms())
    dls = block.dataloaders(comp.root, bs=64, num_workers=0)
    if list(dls.vocab) != comp.classes:  # fastai sorts a vocab unless told not to: columns would shift
        raise RuntimeError(f"fastai's class order {list(dls.vocab)} is not the competition's {comp.classes}")
    learn = vision_learner(dls, cfg.backbone, pretrained=False, n_out=comp.num_classes, **cfg.model_kwargs)
    precision = choose_precision("cpu", cfg.precision, verbose=True)
    print(f"precision: {precision.name} ({precision.reason})", flush=True)
    if precision.dtype == torch.bfloat16:
        learn.add_cb(CpuAutocast())
    epochs, epoch_s = cfg.epochs, None
    if minutes:
        epochs, epoch_s = epochs_for(learn, minutes)
        print(f"budget {minutes:.1f} min: {epoch_s:.0f} s per epoch (timed), {epochs} epochs", flush=True)
    start = time.time()
    # headless (make bench-fmnist's log): the epoch table only, not a progress-bar line per batch
    no_bar, fastprogress.fastprogress.NO_BAR = fastprogress.fastprogress.NO_BAR, not sys.stdout.isatty()
    try:
        learn.fit_one_cycle(epochs)
        probs, _ = learn.get_preds(dl=dls.test_dl(comp.test["path"].tolist()))
    finally:
        fastprogress.fastprogress.NO_BAR = no_bar
    sub = make_submission(probs.numpy(), comp.test["id"].to_numpy(), comp.sample_submission)
    write_submission(sub, out / "submission.csv", comp.sample_submission)
    info = {"backbone": cfg.backbone, "model_kwargs": cfg.model_kwargs, "img_size": cfg.img_size,
            "epochs": epochs, "budget_minutes": minutes, "measured_epoch_seconds": epoch_s,
            "batch_size": 64, "lr": "fastai default (1e-3, one-cycle)",
            "augmentation": "aug_transforms()", "precision": precision.name, "cpu_capability": cpu_capability(),
            "train_images": len(comp.train),
            "seconds": round(time.time() - start, 1)}
    write_json(done, info)
    return info


def parser() -> argparse.ArgumentParser:
    ap = command_parser("bench.fmnist_baseline", __doc__)
    ap.add_argument("--data-dir", required=True, help="the Fashion-MNIST competition (lib.ops.demo)")
    ap.add_argument("--params", required=True, help="the recipe file whose backbone, img_size and epochs it uses")
    ap.add_argument("--out", required=True, help="folder of the baseline's model, metrics and submission")
    budget = ap.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=None, help="train for this many minutes (epochs from timing)")
    budget.add_argument("--budget-from", default=None, help="a runs folder: train for its runs' summed minutes")
    return ap


def main(argv=None) -> None:
    a = parser().parse_args(argv)
    if (resolve(a.out) / "baseline.json").exists():
        print(f"{a.out}: baseline already trained (delete the folder to retrain)")
        return
    minutes = grid_minutes(a.budget_from) if a.budget_from else a.minutes
    print(run_baseline(a.data_dir, a.params, a.out, minutes=minutes))


if __name__ == "__main__":
    main()
