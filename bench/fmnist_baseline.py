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
"""
from __future__ import annotations

import argparse
import sys
import time

import fastprogress.fastprogress
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

from lib.callbacks import CpuAutocast
from lib.config import TrainConfig
from lib.data import open_competition
from lib.io import write_json
from lib.paths import resolve
from lib.submission import make_submission, write_submission


def run_baseline(data_dir: str, params: str, out: str, seed: int = 42) -> dict:
    """Train the baseline and write its submission; returns what baseline.json holds."""
    cfg = TrainConfig.from_yaml(resolve(params))
    out = resolve(out)
    done = out / "baseline.json"
    comp = open_competition(data_dir)
    torch.manual_seed(seed)
    start = time.time()
    # folder-per-class, as fastai reads it; the class order is the competition's (classes.json)
    block = DataBlock(blocks=(ImageBlock, CategoryBlock(vocab=comp.classes, sort=False)),
                      get_items=lambda _: comp.train["path"].tolist(), get_y=parent_label,
                      splitter=IndexSplitter([]), item_tfms=Resize(cfg.img_size), batch_tfms=aug_transforms())
    dls = block.dataloaders(comp.root, bs=64, num_workers=0)
    if list(dls.vocab) != comp.classes:  # fastai sorts a vocab unless told not to: columns would shift
        raise RuntimeError(f"fastai's class order {list(dls.vocab)} is not the competition's {comp.classes}")
    learn = vision_learner(dls, cfg.backbone, pretrained=False, n_out=comp.num_classes, **cfg.model_kwargs)
    if cfg.precision == "bf16":
        learn.add_cb(CpuAutocast())
    # headless (make bench-fmnist's log): the epoch table only, not a progress-bar line per batch
    no_bar, fastprogress.fastprogress.NO_BAR = fastprogress.fastprogress.NO_BAR, not sys.stdout.isatty()
    try:
        learn.fit_one_cycle(cfg.epochs)
        probs, _ = learn.get_preds(dl=dls.test_dl(comp.test["path"].tolist()))
    finally:
        fastprogress.fastprogress.NO_BAR = no_bar
    sub = make_submission(probs.numpy(), comp.test["id"].to_numpy(), comp.sample_submission)
    write_submission(sub, out / "submission.csv", comp.sample_submission)
    info = {"backbone": cfg.backbone, "model_kwargs": cfg.model_kwargs, "img_size": cfg.img_size,
            "epochs": cfg.epochs, "batch_size": 64, "lr": "fastai default (1e-3, one-cycle)",
            "augmentation": "aug_transforms()", "precision": cfg.precision, "train_images": len(comp.train),
            "seconds": round(time.time() - start, 1)}
    write_json(done, info)
    return info


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--params", required=True, help="the recipe file whose backbone, img_size and epochs it uses")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if (resolve(a.out) / "baseline.json").exists():
        print(f"{a.out}: baseline already trained (delete the folder to retrain)")
        return
    print(run_baseline(a.data_dir, a.params, a.out))


if __name__ == "__main__":
    main()
