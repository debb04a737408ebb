"""The kit's training epoch on CPU against a plain PyTorch loop over the same model, data,
optimizer and batch size, both timed in this run.

    python -m bench.train_overhead [--backbone resnet10t] [--epochs 2] [--rounds 2]

Both sides: fold 0 of a demo competition of 1,000 images per class (built once under
data/bench_train), the same ``ImageDataset`` (pre-resized cache, `light` augmentation), batch 64,
AdamW with decoupled weight decay under a one-cycle schedule, one validation pass per epoch,
no EMA/MixUp, main-process data loading. The kit side is ``lib.train.loop.setup_run`` + ``fit``
(fastai Learner, its callbacks, per-epoch scoring, the atomic resumable checkpoint each epoch:
~60 MB for resnet10t, a fixed ~0.15 s per epoch here); the plain side is the loop a competitor
writes by hand. Rounds alternate kit and plain so that machine load falls on both alike. The last
line prints the ratio of seconds per epoch (kit / plain; target <= 1.05).
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from lib.core.cli import command_parser
from lib.core.config import TrainConfig
from lib.ops.demo_data import build_demo
from lib.train.loop import fit, setup_run


def plain_epochs(run, epochs: int, lr: float, wd: float, bs: int) -> float:
    """Seconds per epoch of a hand-written loop over the run's own datasets and a fresh model copy."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(run.cfg.backbone, num_classes=run.comp.num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    train = torch.utils.data.DataLoader(run.data.train, batch_size=bs, shuffle=True, drop_last=True)
    valid = torch.utils.data.DataLoader(run.data.valid, batch_size=bs * 2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * len(train), pct_start=0.1)
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for x, y in train:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            probs = torch.cat([torch.softmax(model(x), 1) for x, _ in valid])
        assert len(probs) == len(run.data.valid)
    return (time.perf_counter() - t0) / epochs


def kit_epochs(data_dir, runs_dir, backbone, epochs, lr, wd, bs, k) -> tuple[float, object]:
    run = setup_run(TrainConfig(data_dir=str(data_dir), backbone=backbone, fold=0, n_folds=3, img_size=32,
                                batch_size=bs, epochs=epochs, lr=lr, weight_decay=wd, aug="light",
                                runs_dir=str(runs_dir), run_name=f"overhead_{k}", progress=False, verbose=False,
                                num_workers=0))
    t0 = time.perf_counter()
    fit(run)
    return (time.perf_counter() - t0) / epochs, run


def parser() -> argparse.ArgumentParser:
    ap = command_parser("bench.train_overhead", __doc__)
    ap.add_argument("--backbone", default="resnet10t", help="timm model name")
    ap.add_argument("--epochs", type=int, default=2, help="epochs of each timed run")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of the kit and the plain loop")
    ap.add_argument("--per-class", type=int, default=1000, help="demo images per class (3 folds)")
    return ap


def main(argv=None) -> None:
    a = parser().parse_args(argv)
    data = build_demo("auto", out="data", name="bench_train", max_train_per_class=a.per_class, max_test=500,
                      verbose=False)
    lr, wd, bs = 2e-3, 0.05, 64
    kit, plain = [], []
    with tempfile.TemporaryDirectory() as runs:
        for k in range(a.rounds):
            t, run = kit_epochs(data, runs, a.backbone, a.epochs, lr, wd, bs, k)
            kit.append(t)
            plain.append(plain_epochs(run, a.epochs, lr, wd, bs))
            print(f"round {k + 1}: kit {kit[-1]:.2f} s/epoch, plain {plain[-1]:.2f} s/epoch", flush=True)
    n = len(run.data.train) // bs * bs
    kit_s, plain_s = float(np.median(kit)), float(np.median(plain))
    print(f"{a.backbone} @32px, {n} train + {len(run.data.valid)} valid images per epoch, batch {bs}, "
          f"{torch.get_num_threads()} threads: kit {n / kit_s:.0f} img/s, plain {n / plain_s:.0f} img/s")
    print(f"kit/plain seconds per epoch: {kit_s / plain_s:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
