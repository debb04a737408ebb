"""Which Fashion-MNIST recipe fits the 60-minute budget at fp32 on an AVX2-only CPU? Accuracy per recipe.

    python -m bench.fmnist_recipes --data-dir data/fmnist_full --runs-dir runs/fmnist_recipes --workers 6

The scored benchmark's compute is set by its slowest CPU kind: at fp32 on AVX2 one 48,000-image epoch
of ``params/fmnist/airnet.yaml``'s model costs about a minute on two cores, so the 108 epochs of the
18-epoch recipe (5 folds + its refit) take 1.5 hours. A cheaper recipe trades accuracy for fewer
convolution FLOPs (narrower stages, fewer epochs, the first epochs at a smaller size through
``stages``). Accuracy does not depend on the device a recipe trains on, so this script trains every
candidate's 5 folds (and refit, where it has one) on whatever device is given (a GPU does it in minutes),
several runs at once, at fp32, and scores each candidate on the test labels (``solution.csv``) the way 04
combines its runs: the fold models' mean, mixed 50/50 with the refit, under a temperature fitted on the
out-of-fold predictions. ``cost`` is the candidate's training FLOPs relative to one epoch of the
18-epoch recipe's model (measured with ``torch.utils.flop_counter``), so a CPU's minutes follow from its
minute per epoch. Results: bench/README.md.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lib.core.cli import command_parser
from lib.core.config import TrainConfig
from lib.core.metrics import accuracy, apply_temperature, fit_temperature, log_loss, probs_to_logits
from lib.model.factory import build_model

BASE = dict(backbone="airnet_tiny", img_size=28, pool="max", batch_size=128, lr=0.008, weight_decay=0.05,
            aug="light", loss="ce", precision="fp32", n_folds=5, progress=False, verbose=False)

# name: (recipe changes, refit?)
CANDIDATES = {
    "w24_e10": (dict(epochs=10, model_kwargs={"widths": [24, 96, 96]}), False),
    "w24_s20x10_28x6": (dict(epochs=16, stages=[[20, 10], [28, 6]], model_kwargs={"widths": [24, 96, 96]}), False),
    "w32_s20x6_28x3": (dict(epochs=9, stages=[[20, 6], [28, 3]]), False),
    "w24_e8_refit": (dict(epochs=8, model_kwargs={"widths": [24, 96, 96]}), True),
    "w32_e6": (dict(epochs=6), False),
    "w24_e12": (dict(epochs=12, model_kwargs={"widths": [24, 96, 96]}), False),
    "w24_s20x8_28x5": (dict(epochs=13, stages=[[20, 8], [28, 5]], model_kwargs={"widths": [24, 96, 96]}), False),
    "w32_e18_refit": (dict(epochs=18), True),  # params/fmnist/airnet.yaml, the reference
}


def epoch_flops(changes: dict, size: int) -> float:
    """Training FLOPs (forward + backward) of one 128-image batch of the candidate's model at ``size`` px."""
    from torch.utils.flop_counter import FlopCounterMode
    cfg = TrainConfig(**{**BASE, **changes, "stages": None})
    model, _ = build_model(cfg.replace(pretrained="none"), 10)
    x = torch.randn(128, 3, size, size)
    with FlopCounterMode(display=False) as fc:
        model(x).sum().backward()
    return fc.get_total_flops()


def cost(changes: dict, refit: bool, n_folds: int = 5) -> float:
    """Training compute in units of one 48,000-image epoch of the reference model at 28 px."""
    ref = epoch_flops({}, 28)
    stages = changes.get("stages") or [[28, changes["epochs"]]]
    per_model = sum(epoch_flops(changes, s) / ref * e for s, e, *_ in stages)
    return per_model * n_folds + (per_model * 60 / 48 if refit else 0)


def train_one(args) -> dict:
    from lib.train.loop import train_fold
    name, fold, data_dir, runs_dir, device, max_samples = args
    changes, _ = CANDIDATES[name]
    torch.set_num_threads(1)
    full = fold == "full"
    cfg = TrainConfig(**{**BASE, **changes}, data_dir=data_dir, runs_dir=runs_dir, device=device, num_workers=0,
                      max_samples=max_samples,
                      fold=0 if full else fold, full_data=full, run_name=f"{name}_{'full' if full else f'f{fold}'}")
    start = time.time()
    train_fold(cfg)
    return dict(name=name, fold=fold, seconds=round(time.time() - start, 1))


def score(name: str, refit: bool, data_dir: Path, runs_dir: Path) -> dict | None:
    """The candidate's test scores as 04 would combine its runs; None until all its runs are complete."""
    dirs = [runs_dir / f"{name}_f{k}" for k in range(5)] + ([runs_dir / f"{name}_full"] if refit else [])
    if not all((d / "metrics.json").exists() and json.loads((d / "metrics.json").read_text()).get("complete")
               for d in dirs):
        return None
    classes = json.loads((data_dir / "classes.json").read_text())
    classes = classes["classes"] if isinstance(classes, dict) else classes
    names = [c["name"] if isinstance(c, dict) else c for c in classes]
    oof = pd.concat([pd.read_csv(d / "oof.csv") for d in dirs[:5]])
    y_oof = oof["target"].to_numpy()
    p_oof = oof[names].to_numpy()
    T = fit_temperature(probs_to_logits(p_oof), y_oof)
    sol = pd.read_csv(data_dir / "solution.csv", dtype={"ID": str})
    tests = [pd.read_csv(d / "test.csv", dtype={"id": str}).set_index("id").loc[sol["ID"], names].to_numpy()
             for d in dirs]
    y = sol["target"].to_numpy()
    folds = np.mean(tests[:5], axis=0)
    mixed = 0.5 * folds + 0.5 * tests[5] if refit else folds
    cal = apply_temperature(probs_to_logits(mixed), T)
    return dict(name=name, oof_acc=round(accuracy(y_oof, p_oof), 4), oof_ll=round(log_loss(y_oof, p_oof), 4),
                fold_acc=round(float(np.mean([accuracy(y, t) for t in tests[:5]])), 4),
                folds_mean_acc=round(accuracy(y, folds), 4), folds_mean_ll=round(log_loss(y, folds), 4),
                T=round(T, 3), test_acc=round(accuracy(y, cal), 4), test_ll=round(log_loss(y, cal), 4))


def parser() -> argparse.ArgumentParser:
    ap = command_parser("bench.fmnist_recipes", __doc__)
    ap.add_argument("--data-dir", default="data/fmnist_full", help="the Fashion-MNIST competition (lib.ops.demo)")
    ap.add_argument("--runs-dir", default="runs/fmnist_recipes", help="where the candidates' runs go")
    ap.add_argument("--device", default=None, help="cuda | cpu (None: cuda if there is one)")
    ap.add_argument("--workers", type=int, default=2, help="runs trained at once")
    ap.add_argument("--max-samples", type=int, help="cap each run's images (a smoke run of this script)")
    ap.add_argument("--only", nargs="*", help="candidate names (None: all)")
    ap.add_argument("--score-only", action="store_true", help="score what is complete, train nothing")
    return ap


def main(argv=None) -> None:
    a = parser().parse_args(argv)
    names = a.only or list(CANDIDATES)
    data_dir, runs_dir = Path(a.data_dir), Path(a.runs_dir)
    if not a.score_only:
        # folds.csv and the image cache are made once, before runs start at once
        from lib.train.loop import setup_run
        setup_run(TrainConfig(**BASE, data_dir=a.data_dir, runs_dir=a.runs_dir, device="cpu", epochs=1,
                              run_name="_setup", max_samples=256))
        jobs = [(n, k, a.data_dir, a.runs_dir, a.device, a.max_samples) for n in names
                for k in list(range(5)) + (["full"] if CANDIDATES[n][1] else [])]
        with ProcessPoolExecutor(a.workers, mp_context=mp.get_context("spawn")) as pool:
            for r in pool.map(train_one, jobs):
                print(json.dumps(r), flush=True)
    rows = []
    for n in names:
        changes, refit = CANDIDATES[n]
        s = score(n, refit, data_dir, runs_dir) or dict(name=n)
        rows.append(dict(s, cost=round(cost(changes, refit), 1)))
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
