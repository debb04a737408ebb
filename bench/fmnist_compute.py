"""Is k-fold worth its compute? Two single models given the whole grid's training time, beside
`make bench-fmnist`'s rows (run after it: ``make bench-fmnist-compute``).

    python -m bench.fmnist_compute --data-dir data/fmnist_full --runs-dir runs/fmnist \
        --params params/fmnist/resnet64.yaml

The budget is the summed training minutes of the grid's fold runs in ``--runs-dir`` (their
metrics.json). Spent on:

- ``baseline_equal_compute/``: the fastai-defaults baseline (``bench.fmnist_baseline``, ``--params``'
  backbone and size) with the epochs that fit the budget (from a timed pass);
- ``full_equal_compute/``: the grid's best recipe by CV (lowest mean OOF log loss, chosen without the
  test labels: the recipe its fold runs recorded) trained once on all training images (``full_data``,
  lib.predict.refit) with the epochs that fit the budget: its fold runs' measured seconds per epoch, scaled by the
  full run's share of images (K/(K-1)). Its ``submission.csv`` is its test.csv in the competition's format.

``bench.fmnist_report`` then lists both. Each step is skipped when its folder holds a finished result.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from lib.core.cli import command_parser
from lib.core.config import TrainConfig
from lib.core.io import read_json
from lib.core.paths import resolve
from lib.core.rundir import find_runs, load_config
from lib.data.competition import open_competition
from lib.predict.submission import make_submission, write_submission
from lib.train.loop import train_fold

from .fmnist_baseline import grid_minutes, run_baseline


def full_epochs(runs_dir, model: str, minutes: float) -> int:
    """Epochs of a full-data run of ``model`` that fit ``minutes``: the model's fold runs' mean
    seconds per epoch (their metrics.json history) times K/(K-1) (a full run sees every image, a
    fold run (K-1)/K of them)."""
    runs = find_runs(runs_dir, full_data=False)
    g = runs[runs["model"] == model]
    if g.empty:
        raise FileNotFoundError(f"{runs_dir}: no completed fold run of {model} to time an epoch")
    k = TrainConfig.from_yaml(Path(g["dir"].iloc[0]) / "params.yaml").n_folds
    metrics = [read_json(Path(d) / "metrics.json") for d in g["dir"]]
    per_epoch = sum(h["seconds"] for m in metrics for h in m["epochs"]) / sum(len(m["epochs"]) for m in metrics) / 60
    return max(1, int(minutes // (per_epoch * k / (k - 1)))) if per_epoch > 0 else 1


def best_model(runs_dir) -> str:
    """The grid's model with the lowest mean OOF log loss over its complete fold runs."""
    runs = find_runs(runs_dir, full_data=False)
    if runs.empty:
        raise FileNotFoundError(f"{runs_dir}: no completed fold run to pick the best recipe from")
    return str(runs.groupby("model")["log_loss"].mean().idxmin())


def run_full(data_dir: str, runs_dir: str, minutes: float) -> dict:
    """Train the grid's best recipe by CV on every training image for the epochs that fit ``minutes``
    (its fold runs' recorded params.yaml, ``full_data`` on); write its submission."""
    model = best_model(runs_dir)
    fold_run = find_runs(runs_dir, full_data=False).query("model == @model")["dir"].iloc[0]
    out = resolve(runs_dir) / "full_equal_compute"
    cfg = load_config(fold_run).replace(data_dir=data_dir, full_data=True, fold=0,
                                        epochs=full_epochs(runs_dir, model, minutes), runs_dir=str(out),
                                        run_name=f"{model}_full", progress=False, force=False, resume=True)
    print(f"full-data run: {model} (best CV), {cfg.epochs} epochs")
    summary = train_fold(cfg)
    comp = open_competition(data_dir)
    test = pd.read_csv(out / cfg.name / "test.csv", dtype={"id": str})
    sub = make_submission(test[comp.classes].to_numpy(), test["id"].to_numpy(), comp.sample_submission)
    write_submission(sub, out / "submission.csv", comp.sample_submission)
    return {"model": model, "epochs": cfg.epochs, "budget_minutes": minutes, "minutes": summary.get("minutes")}


def parser() -> argparse.ArgumentParser:
    ap = command_parser("bench.fmnist_compute", __doc__)
    ap.add_argument("--data-dir", required=True, help="the Fashion-MNIST competition of the grid")
    ap.add_argument("--runs-dir", required=True, help="the grid's runs (their summed minutes are the budget)")
    ap.add_argument("--params", required=True, help="the baseline's backbone and size (a params/*.yaml)")
    return ap


def main(argv=None) -> None:
    a = parser().parse_args(argv)
    minutes = grid_minutes(a.runs_dir)
    print(f"budget: the grid's {minutes:.1f} training minutes")
    base = resolve(a.runs_dir) / "baseline_equal_compute"
    if not (base / "baseline.json").exists():
        print(run_baseline(a.data_dir, a.params, str(base), minutes=minutes))
    if not (resolve(a.runs_dir) / "full_equal_compute" / "submission.csv").exists():
        print(run_full(a.data_dir, a.runs_dir, minutes))


if __name__ == "__main__":
    main()
