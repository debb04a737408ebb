"""Print what a pipeline run achieved: CV per model, the blend, and (demo only) the test score.

    python -m lib.summary --data-dir data/fmnist --runs-dir runs [--score]

``--score`` is the demo's final, explicitly marked scoring step: it reads the held-back
``solution.csv`` (which nothing else reads) and scores ``runs/submission.csv`` against it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from .data import scan_competition
from .metrics import accuracy, log_loss
from .paths import resolve
from .runs import find_runs, load_oof


def cv_table(data_dir, runs_dir="runs") -> pd.DataFrame:
    """Per model: folds, images in its full OOF, CV log loss and accuracy on that OOF."""
    comp = scan_competition(resolve(data_dir), verbose=False)
    runs = find_runs(runs_dir)
    rows = []
    for model, df in load_oof(runs, comp.classes).items():
        p, y = df[comp.classes].to_numpy(float), df["target"].to_numpy()
        rows.append({"model": model, "folds": int((runs["model"] == model).sum()), "oof_images": len(df),
                     "cv_log_loss": log_loss(y, p), "cv_accuracy": accuracy(y, p)})
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--submission", default=None, help="default: <runs-dir>/submission.csv")
    ap.add_argument("--score", action="store_true", help="score against the demo's held-back solution.csv")
    a = ap.parse_args(argv)
    pd.set_option("display.width", 160), pd.set_option("display.precision", 4)
    runs_dir = resolve(a.runs_dir)
    print("\n== cross-validation (out-of-fold) per model ==")
    print(cv_table(a.data_dir, runs_dir).to_string(index=False))
    report = runs_dir / "ensemble" / "blend_report.csv"
    if report.exists():
        print("\n== blend (04_ensemble_tta, OOF) ==")
        print(pd.read_csv(report).to_string(index=False))
    sub = Path(a.submission) if a.submission else runs_dir / "submission.csv"
    if a.score:
        from .demo import score_submission

        root = resolve(a.data_dir)
        if not (root / "solution.csv").exists():
            print(f"\n(no {root / 'solution.csv'}: only demo competitions can be scored here)")
            return
        s = score_submission(root, sub)
        print(f"\n== FINAL: {sub} scored against the held-back {root / 'solution.csv'} ==")
        print(f"test log loss {s['test_log_loss']:.4f}   test accuracy {s['test_accuracy']:.4f}   "
              f"test macro F1 {s['test_f1_macro']:.4f}")


if __name__ == "__main__":
    main()
