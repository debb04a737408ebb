"""Print what a pipeline run achieved: CV per model, the blend, and (demo only) the test score.

    python -m lib.ops.summary --data-dir data/fmnist --runs-dir runs [--score]

``--score`` is the demo's final, explicitly marked scoring step: it reads the held-back
``solution.csv`` (which nothing else reads) and scores ``runs/submission.csv`` against it. The work
is imported once the arguments are read, so ``--help`` answers at once.
"""
from __future__ import annotations

import argparse

from lib.core.cli import command_parser
from lib.core.io import read_json
from lib.core.paths import relative, resolve


def parser() -> argparse.ArgumentParser:
    ap = command_parser("lib.ops.summary", __doc__)
    ap.add_argument("--data-dir", required=True, help="the competition folder the runs trained on")
    ap.add_argument("--runs-dir", default="runs", help="the runs (02_train) and 04's ensemble/")
    ap.add_argument("--submission", default=None, help="the submission to score (None: <runs-dir>/submission.csv)")
    ap.add_argument("--score", action="store_true", help="score against the demo's held-back solution.csv")
    return ap


def main(argv=None) -> None:
    a = parser().parse_args(argv)
    import pandas as pd

    from lib.insight.analysis import cv_table, leaderboard
    from lib.ops.demo_data import score_submission
    from lib.predict.oof import open_runs
    pd.set_option("display.width", 160), pd.set_option("display.precision", 4)
    runs_dir = resolve(a.runs_dir)
    comp, runs, oofs = open_runs(a.data_dir, runs_dir)
    cv = cv_table(leaderboard(runs, oofs, comp.classes)).sort_values("model")
    cv = cv.assign(folds=[int((runs["model"] == m).sum()) for m in cv["model"]])
    print("\n== cross-validation (out-of-fold) per model ==")
    print(cv[["model", "folds", "n_oof", "log_loss", "accuracy", "f1_macro"]].to_string(index=False))
    ens = runs_dir / "ensemble"
    if (ens / "blend_report.csv").exists():
        print("\n== blend (04_ensemble_tta, OOF, in-sample) ==")
        print(pd.read_csv(ens / "blend_report.csv").to_string(index=False))
    if (ens / "crossfit.csv").exists():
        print("\n== blend strategies, cross-fitted (each fold scored by what the other folds fitted) ==")
        print(pd.read_csv(ens / "crossfit.csv").to_string(index=False))
    if (ens / "expected_score.json").exists():
        e = read_json(ens / "expected_score.json")
        print(f"\n== expected (04): {e['metric']} {e['expected']:.4f}, {e['level']:.0%} interval "
              f"{e['low']:.4f} .. {e['high']:.4f} for {e['n_test']} test rows ({e['basis']}) ==")
    sub = resolve(a.submission) if a.submission else runs_dir / "submission.csv"
    if a.score:

        root = comp.root
        if not (root / "solution.csv").exists():
            print(f"\n(no {relative(root / 'solution.csv')}: only demo competitions can be scored here)")
            return
        s = score_submission(root, sub)
        print(f"\n== FINAL: {relative(sub)} scored against the held-back {relative(root / 'solution.csv')} ==")
        print(f"test log loss {s['test_log_loss']:.4f}   test accuracy {s['test_accuracy']:.4f}   "
              f"test macro F1 {s['test_f1_macro']:.4f}")
        print(f"extra temperature that would minimise this test log loss: {s['extra_temperature']:.3f} "
              "(1 = the submitted probabilities are calibrated)")


if __name__ == "__main__":
    main()
