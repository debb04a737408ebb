"""Print what a pipeline run achieved: CV per model, the blend, and (demo only) the test score.

    python -m lib.summary --data-dir data/fmnist --runs-dir runs [--score]

``--score`` is the demo's final, explicitly marked scoring step: it reads the held-back
``solution.csv`` (which nothing else reads) and scores ``runs/submission.csv`` against it.
"""
from __future__ import annotations

import argparse

import pandas as pd

from .analysis import cv_table, leaderboard
from .paths import relative, resolve
from .runs import open_runs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--submission", default=None, help="default: <runs-dir>/submission.csv")
    ap.add_argument("--score", action="store_true", help="score against the demo's held-back solution.csv")
    a = ap.parse_args(argv)
    pd.set_option("display.width", 160), pd.set_option("display.precision", 4)
    runs_dir = resolve(a.runs_dir)
    comp, runs, oofs = open_runs(a.data_dir, runs_dir)
    cv = cv_table(leaderboard(runs, oofs, comp.classes)).sort_values("model")
    cv = cv.assign(folds=[int((runs["model"] == m).sum()) for m in cv["model"]])
    print("\n== cross-validation (out-of-fold) per model ==")
    print(cv[["model", "folds", "n_oof", "log_loss", "accuracy", "f1_macro"]].to_string(index=False))
    report = runs_dir / "ensemble" / "blend_report.csv"
    if report.exists():
        print("\n== blend (04_ensemble_tta, OOF) ==")
        print(pd.read_csv(report).to_string(index=False))
    sub = resolve(a.submission) if a.submission else runs_dir / "submission.csv"
    if a.score:
        from .demo import score_submission

        root = comp.root
        if not (root / "solution.csv").exists():
            print(f"\n(no {relative(root / 'solution.csv')}: only demo competitions can be scored here)")
            return
        s = score_submission(root, sub)
        print(f"\n== FINAL: {relative(sub)} scored against the held-back {relative(root / 'solution.csv')} ==")
        print(f"test log loss {s['test_log_loss']:.4f}   test accuracy {s['test_accuracy']:.4f}   "
              f"test macro F1 {s['test_f1_macro']:.4f}")


if __name__ == "__main__":
    main()
