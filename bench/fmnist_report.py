"""The last step of `make bench-fmnist`: score the submission, each single backbone and the baseline
against the held-back ``solution.csv``, beside the published Fashion-MNIST results.

    python -m bench.fmnist_report --data-dir data/fmnist_full --runs-dir runs/fmnist --started 1764000000

Nothing before this step reads ``solution.csv``. The best single backbone is the one with the
lowest cross-validated (OOF) log loss, chosen without the test labels; every backbone is listed.
Prints a markdown table and whether each target of the benchmark is met, and writes it with the
figures to ``<runs-dir>/results.md`` and ``results.json``.
"""
from __future__ import annotations

import argparse
import gzip
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lib.core.cli import command_parser
from lib.core.device import cpu_name
from lib.core.io import read_json, write_json, write_text
from lib.core.paths import repo_root, resolve
from lib.ops.demo_data import score_submission

PUBLISHED_README = Path("/usr/share/doc/dataset-fashion-mnist/README.md.gz")
PUBLISHED_ROWS = ("Google AutoML", "ResNet18", "MobileNet", "2 Conv+2 FC")  # rows of its benchmark table


def published(readme: Path = PUBLISHED_README) -> list[dict]:
    """(classifier, preprocessing, test accuracy) rows of the dataset README's benchmark table."""
    if not readme.exists():
        return []
    rows = []
    for line in gzip.open(readme, "rt", encoding="utf-8"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if (len(cells) >= 3 and any(cells[0].startswith(n) for n in PUBLISHED_ROWS)
                and re.fullmatch(r"0\.\d+", cells[2])):
            rows.append({"entry": f"published: {cells[0]}", "detail": cells[1], "test_accuracy": float(cells[2])})
    return rows


def commit() -> str:
    run = lambda *a: subprocess.run(["git", *a], cwd=repo_root(), capture_output=True, text=True).stdout.strip()  # noqa: E731
    dirty = run("status", "--porcelain", "--untracked-files=no")
    return run("rev-parse", "--short", "HEAD") + (" (uncommitted changes)" if dirty else "")


def report(data_dir: str, runs_dir: str, started: float | None) -> dict:
    root, runs = resolve(data_dir), resolve(runs_dir)
    blend = pd.read_csv(runs / "ensemble" / "blend_report.csv")
    cv = dict(zip(blend["model"], blend["log_loss"]))
    models = [m for m in blend["model"] if (runs / "ensemble" / f"test_{m}.csv").exists()]
    best = min(models, key=lambda m: cv[m])
    cross = runs / "ensemble" / "crossfit.csv"  # the blend's CV: cross-fitted where 04 wrote it, else in-sample
    if cross.exists():
        cf = pd.read_csv(cross)
        chosen = cf[cf["chosen"]].iloc[0]
        blend_cv, how = float(chosen["cross_fitted_log_loss"]), f"{chosen['strategy']} (cross-fitted)"
    else:
        blend_cv, how = cv["calibrated_blend"], "fitted blend"
    expected = runs / "ensemble" / "expected_score.json"
    rows = [{"entry": "foldbook blend (submission.csv)",
             "detail": f"{', '.join(models)} x 5 folds, TTA, {how}, T",
             "cv_log_loss": blend_cv, **score_submission(root, runs / "submission.csv"),
             **({"expected": read_json(expected)} if expected.exists() else {})}]
    for m in sorted(models, key=lambda m: cv[m]):
        rows.append({"entry": f"single backbone: {m}" + (" (best CV)" if m == best else ""),
                     "detail": "5-fold mean, TTA",
                     "cv_log_loss": cv[m], **score_submission(root, runs / "ensemble" / f"test_{m}.csv")})
    rows += refit_parts(root, runs)
    base = read_json(runs / "baseline" / "baseline.json")
    rows.append({"entry": "baseline: fastai defaults",
                 "detail": f"vision_learner {base['backbone']}, {base['epochs']} epochs, "
                 f"all {base['train_images']} images", **score_submission(root, runs / "baseline" / "submission.csv")})
    equal = runs / "baseline_equal_compute"
    if (equal / "baseline.json").exists():  # the same baseline given the grid's training minutes
        eq = read_json(equal / "baseline.json")
        rows.append({"entry": "baseline at equal compute: fastai defaults",
                     "detail": f"vision_learner {eq['backbone']}, {eq['epochs']} epochs in "
                     f"{eq['seconds'] / 60:.1f} min (budget {eq['budget_minutes']:.1f})",
                     **score_submission(root, equal / "submission.csv")})
    full = runs / "full_equal_compute"
    if (full / "submission.csv").exists():  # the kit's recipe once on all images, given the same minutes
        run = next(d for d in full.iterdir() if (d / "metrics.json").exists())
        m = read_json(run / "metrics.json")
        rows.append({"entry": "full data at equal compute: the kit's recipe",
                     "detail": f"{run.name}, {len(m['epochs'])} epochs on all images in {m['minutes']:.1f} min",
                     **score_submission(root, full / "submission.csv")})
    minutes = (time.time() - started) / 60 if started else None
    if minutes is None and (runs / "results.json").exists():  # a later report (bench-fmnist-compute) keeps the timing
        minutes = read_json(runs / "results.json").get("minutes")
    ll = {r["entry"]: r["test_log_loss"] for r in rows}
    sub, single = rows[0], rows[1]
    targets = {"minutes <= 60": minutes is not None and minutes <= 60,
               "test accuracy >= 0.94": sub["test_accuracy"] >= 0.94,
               "test log loss <= 0.17": sub["test_log_loss"] <= 0.17,
               "log loss below the baseline": sub["test_log_loss"] < ll["baseline: fastai defaults"],
               "submitted probabilities calibrated (extra T in 0.9-1.1)": 0.9 <= sub["extra_temperature"] <= 1.1}
    if len(models) > 1:  # one backbone: the submission is that backbone, calibrated
        targets["log loss below the best single backbone"] = sub["test_log_loss"] < single["test_log_loss"]
    if "expected" in sub:
        e = sub["expected"]
        targets["test log loss within 04's expected interval"] = e["low"] <= sub["test_log_loss"] <= e["high"]
    return {"commit": commit(), "cpu": f"{cpu_name()}, {torch.get_num_threads()} threads", "minutes": minutes,
            "rows": rows + published(), "targets": targets, "baseline_seconds": base["seconds"]}


def refit_parts(root: Path, runs: Path) -> list[dict]:
    """For each model 04 mixed a full-data refit into (blend.json's ``refit``): its fold runs' mean and
    its full-data run alone, each from the runs' own test.csv (no TTA, no temperature), to show what
    the refit adds to the fold mean."""
    plan = runs / "ensemble" / "blend.json"
    refits = read_json(plan).get("refit", {}) if plan.exists() else {}
    if not refits:
        return []
    from lib.core.rundir import find_runs
    from lib.data.competition import open_competition
    from lib.predict.oof import load_test
    from lib.predict.submission import make_submission
    comp, folds, rows = open_competition(root), find_runs(runs, full_data=False), []
    fold_means = load_test(folds, comp.classes)

    def scored(test: pd.DataFrame) -> dict:
        probs = test.set_index("id").loc[comp.test["id"], comp.classes].to_numpy(np.float64)
        return score_submission(root, make_submission(probs, comp.test["id"].to_numpy(), comp.sample_submission,
                                                      label_values=comp.label_values))
    for m, r in refits.items():
        rows.append({"entry": f"refit part: {m}, fold runs",
                     "detail": f"mean of {(folds['model'] == m).sum()} fold models, no TTA, no T",
                     **scored(fold_means[m])})
        rows.append({"entry": f"refit part: {r['run']}", "detail": f"one full-data model (share {r['share']:g} in "
                     "04), no TTA, no T", **scored(pd.read_csv(runs / r["run"] / "test.csv", dtype={"id": str}))})
    return rows


def markdown(r: dict) -> str:
    fmt = lambda v, d=4: "" if v is None or v != v else f"{v:.{d}f}"  # noqa: E731
    lines = [f"Commit {r['commit']}, {r['cpu']}: {fmt(r['minutes'], 1)} minutes for the whole `make bench-fmnist`.", "",
             "| entry | how | CV log loss | test accuracy | test log loss | extra T |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in r["rows"]:
        lines.append(f"| {row['entry']} | {row['detail']} | {fmt(row.get('cv_log_loss'))} | "
                     f"{fmt(row.get('test_accuracy'), 3 if row['entry'].startswith('published') else 4)} | "
                     f"{fmt(row.get('test_log_loss'))} | {fmt(row.get('extra_temperature'), 3)} |")
    e = r["rows"][0].get("expected")
    if e:
        lines += ["", f"04 expected {e['metric']} {e['expected']:.4f}, {e['level']:.0%} interval {e['low']:.4f} .. "
                  f"{e['high']:.4f} ({e['basis']}); extra T: the temperature that would minimise the test log loss "
                  "of the submitted probabilities (1 = calibrated)."]
    lines += ["", "Targets: " + "; ".join(f"{k}: {'met' if v else 'NOT MET'}" for k, v in r["targets"].items())]
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    ap = command_parser("bench.fmnist_report", __doc__)
    ap.add_argument("--data-dir", required=True, help="the Fashion-MNIST competition (its solution.csv scores)")
    ap.add_argument("--runs-dir", required=True, help="the benchmark's runs, submission and baseline")
    ap.add_argument("--started", type=float, default=None, help="unix time the benchmark started (for its minutes)")
    return ap


def main(argv=None) -> None:
    a = parser().parse_args(argv)
    r = report(a.data_dir, a.runs_dir, a.started)
    md = markdown(r)
    runs = resolve(a.runs_dir)
    write_json(runs / "results.json", r)
    write_text(runs / "results.md", md)
    print(f"\n== FINAL: scored against the held-back {resolve(a.data_dir) / 'solution.csv'} ==\n")
    print(md)


if __name__ == "__main__":
    main()
