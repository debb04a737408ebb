"""bench/fmnist_baseline.py and bench/fmnist_report.py on the tiny digits competition: the baseline
trains and writes a valid submission; the report scores every entry and judges the targets."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from lib.predict.submission import make_submission, validate_submission


def test_baseline_trains_on_all_images_and_writes_a_submission(bench_script, digits_comp, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"backbone": "test_resnet", "img_size": 24, "epochs": 1, "precision": "bf16"}))
    info = bench_script("fmnist_baseline").run_baseline(str(digits_comp), str(recipe), str(tmp_path / "base"))
    sample = pd.read_csv(digits_comp / "sample_submission.csv", dtype={"ID": str})
    sub = pd.read_csv(tmp_path / "base" / "submission.csv", dtype={"ID": str})
    validate_submission(sub, sample)
    assert info["train_images"] == sum(1 for p in (digits_comp / "train").rglob("*.jpg"))
    assert info["epochs"] == 1 and info["precision"] == "bf16"
    assert json.loads((tmp_path / "base" / "baseline.json").read_text())["backbone"] == "test_resnet"
    out = capsys.readouterr().out  # headless: fastai's epoch table, no progress-bar updates
    assert "train_loss" in out and "Epoch 1/1 :" not in out


def test_equal_compute_baseline_takes_as_many_epochs_as_fit_the_budget(bench_script, digits_comp, tmp_path):
    base = bench_script("fmnist_baseline")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"backbone": "test_resnet", "img_size": 16, "epochs": 1, "precision": "fp32"}))
    info = base.run_baseline(str(digits_comp), str(recipe), str(tmp_path / "base"), minutes=0.1)
    assert info["budget_minutes"] == 0.1 and info["measured_epoch_seconds"] > 0
    assert info["epochs"] == max(1, int(6 // info["measured_epoch_seconds"]))
    assert info["seconds"] < 3 * 6 + 10  # it trains for about the budget, not the recipe's epochs
    validate_submission(pd.read_csv(tmp_path / "base" / "submission.csv", dtype={"ID": str}),
                        pd.read_csv(digits_comp / "sample_submission.csv", dtype={"ID": str}))


def _submission(comp, y, wrong, rng):
    """A submission that puts most mass on the true class for all but the first ``wrong`` rows."""
    sample = pd.read_csv(comp / "sample_submission.csv", dtype={"ID": str})
    k = sample.shape[1] - 1
    p = np.full((len(y), k), 0.02)
    hit = np.arange(len(y)) >= wrong
    p[np.arange(len(y)), np.where(hit, y, (y + 1) % k)] = 1.0
    return make_submission(p / p.sum(1, keepdims=True), sample["ID"].to_numpy(), sample)


def test_report_scores_entries_and_judges_targets(bench_script, digits_comp, tmp_path):
    rep = bench_script("fmnist_report")
    sol = pd.read_csv(digits_comp / "solution.csv", dtype={"ID": str})
    y, rng = sol["target"].to_numpy(), np.random.default_rng(0)
    runs = tmp_path / "runs"
    (runs / "ensemble").mkdir(parents=True)
    (runs / "baseline").mkdir()
    _submission(digits_comp, y, 1, rng).to_csv(runs / "submission.csv", index=False)
    _submission(digits_comp, y, 6, rng).to_csv(runs / "ensemble" / "test_a.csv", index=False)
    _submission(digits_comp, y, 3, rng).to_csv(runs / "ensemble" / "test_b.csv", index=False)
    _submission(digits_comp, y, 18, rng).to_csv(runs / "baseline" / "submission.csv", index=False)
    pd.DataFrame({"model": ["a", "b", "equal_blend", "fitted_blend", "calibrated_blend"], "weights": "",
                  "log_loss": [0.4, 0.3, 0.25, 0.2, 0.19]}).to_csv(runs / "ensemble" / "blend_report.csv", index=False)
    (runs / "baseline" / "baseline.json").write_text(json.dumps({"backbone": "b", "epochs": 3, "train_images": 9,
                                                                 "seconds": 1.0}))
    r = rep.report(str(digits_comp), str(runs), started=None)
    assert r["rows"][0]["cv_log_loss"] == 0.19  # no crossfit.csv: the in-sample blend row
    # 04's cross-fitted choice and expected score, and the baseline at equal compute, join the table
    pd.DataFrame({"strategy": ["equal", "fitted"], "cross_fitted_log_loss": [0.23, 0.21],
                  "chosen": [False, True]}).to_csv(runs / "ensemble" / "crossfit.csv", index=False)
    (runs / "ensemble" / "expected_score.json").write_text(json.dumps(
        {"metric": "log_loss", "expected": 0.21, "low": 0.0, "high": 0.3, "level": 0.9, "basis": "cross-fitted OOF"}))
    (runs / "baseline_equal_compute").mkdir()
    _submission(digits_comp, y, 9, rng).to_csv(runs / "baseline_equal_compute" / "submission.csv", index=False)
    (runs / "baseline_equal_compute" / "baseline.json").write_text(json.dumps(
        {"backbone": "b", "epochs": 30, "seconds": 600.0, "budget_minutes": 10.0}))
    r = rep.report(str(digits_comp), str(runs), started=None)
    assert r["rows"][0]["cv_log_loss"] == 0.21 and "fitted (cross-fitted)" in r["rows"][0]["detail"]
    equal = r["rows"][4]
    assert equal["entry"] == "baseline at equal compute: fastai defaults" and "30 epochs" in equal["detail"]
    within = r["rows"][0]["test_log_loss"] <= 0.3
    assert r["targets"]["test log loss within 04's expected interval"] == within
    assert "submitted probabilities calibrated (extra T in 0.9-1.1)" in r["targets"]
    assert "04 expected log_loss 0.2100" in rep.markdown(r)
    entries = [row["entry"] for row in r["rows"]]
    assert entries[:4] == ["foldbook blend (submission.csv)", "single backbone: b (best CV)", "single backbone: a",
                           "baseline: fastai defaults"]
    blend, best = r["rows"][0], r["rows"][1]
    assert blend["test_accuracy"] > best["test_accuracy"] > r["rows"][3]["test_accuracy"]
    assert r["targets"]["log loss below the best single backbone"] and r["targets"]["log loss below the baseline"]
    assert not r["targets"]["minutes <= 60"]  # no start time given: not claimed
    md = rep.markdown(r)
    assert "| foldbook blend (submission.csv) |" in md and "minutes <= 60: NOT MET" in md
    assert r["cpu"] and r["cpu"] in md  # timings are only comparable on the same CPU model
    (runs / "ensemble" / "test_a.csv").unlink()  # one backbone: nothing to beat but itself, not judged
    r = rep.report(str(digits_comp), str(runs), started=None)
    assert [row["entry"] for row in r["rows"]][1] == "single backbone: b (best CV)"
    assert "log loss below the best single backbone" not in r["targets"]


def test_report_shows_the_parts_of_a_full_data_refit(bench_script, digits_comp, tmp_path):
    from lib.data.competition import open_competition
    comp, runs = open_competition(digits_comp), tmp_path / "runs"
    y = pd.read_csv(digits_comp / "solution.csv", dtype={"ID": str}).set_index("ID").loc[comp.test["id"], "target"]
    onehot = np.eye(len(comp.classes))[y.to_numpy()]
    wrong = np.roll(onehot, 1, axis=1)
    for name, params, right in (("a_f0", {"fold": 0}, 0.9), ("a_f1", {"fold": 1}, 0.5),
                                ("a_full", {"full_data": True}, 0.8), ("b_f0", {"fold": 0}, 0.1)):
        (runs / name).mkdir(parents=True)
        (runs / name / "params.yaml").write_text(yaml.safe_dump(params))
        (runs / name / "metrics.json").write_text(json.dumps({"complete": True}))
        t = pd.DataFrame(right * onehot + (1 - right) * wrong, columns=comp.classes)
        t.insert(0, "id", comp.test["id"].to_numpy())
        t.to_csv(runs / name / "test.csv", index=False)
    (runs / "ensemble").mkdir()
    (runs / "ensemble" / "blend.json").write_text(json.dumps({"refit": {"a": {"run": "a_full", "share": 0.5}}}))
    folds, full = bench_script("fmnist_report").refit_parts(digits_comp, runs)
    assert folds["entry"] == "refit part: a, fold runs" and "mean of 2 fold models" in folds["detail"]
    assert full["entry"] == "refit part: a_full" and "share 0.5" in full["detail"]
    # the fold mean puts 0.7 on the true class (b's run and the full run are not in it), the full run 0.8
    assert folds["test_accuracy"] == full["test_accuracy"] == 1.0
    assert folds["test_log_loss"] == pytest.approx(-np.log(0.7), abs=1e-6)
    assert full["test_log_loss"] == pytest.approx(-np.log(0.8), abs=1e-6)
    (runs / "ensemble" / "blend.json").write_text(json.dumps({"refit": {}}))
    assert bench_script("fmnist_report").refit_parts(digits_comp, runs) == []


def test_published_rows_come_from_the_dataset_readme(bench_script):
    rows = bench_script("fmnist_report").published()
    if not rows:
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    acc = {r["entry"]: r["test_accuracy"] for r in rows}
    assert (acc["published: Google AutoML"] == pytest.approx(0.939)
            and acc["published: ResNet18"] == pytest.approx(0.949))


def test_full_data_run_at_equal_compute_gets_the_epochs_that_fit(bench_script, digits_comp, tmp_path):
    from lib.core.config import TrainConfig
    from lib.core.io import read_json
    from lib.train.loop import train_fold
    compute = bench_script("fmnist_compute")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({"backbone": "test_resnet", "img_size": 16, "epochs": 2, "n_folds": 3,
                                      "precision": "fp32", "batch_size": 32, "progress": False, "verbose": False}))
    runs = tmp_path / "runs"
    for fold in (0, 1):
        train_fold(TrainConfig.from_yaml(recipe, data_dir=str(digits_comp), fold=fold, runs_dir=str(runs),
                                         run_name=f"tiny_f{fold}"))
    hist = [h for f in (0, 1) for h in read_json(runs / f"tiny_f{f}" / "metrics.json")["epochs"]]
    per_epoch = np.mean([h["seconds"] for h in hist]) / 60
    assert compute.full_epochs(runs, "tiny", 4.5 * per_epoch * 1.5) == 4  # 3 folds: a full epoch is 1.5 fold epochs
    assert compute.full_epochs(runs, "tiny", 0.0) == 1
    info = compute.run_full(str(digits_comp), str(runs), minutes=3 * per_epoch * 1.5 + 1e-9)
    assert info["model"] == "tiny" and info["epochs"] == 3
    sample = pd.read_csv(digits_comp / "sample_submission.csv", dtype={"ID": str})
    validate_submission(pd.read_csv(runs / "full_equal_compute" / "submission.csv", dtype={"ID": str}), sample)
    m = read_json(runs / "full_equal_compute" / "tiny_full" / "metrics.json")
    assert m["full_data"] and len(m["epochs"]) == 3


def test_the_full_data_run_takes_the_recipe_with_the_best_cv(bench_script, tmp_path):
    """best_model: the lowest mean OOF log loss over each model's complete fold runs (no test label read)."""
    compute = bench_script("fmnist_compute")
    runs = tmp_path / "runs"
    for name, fold, ll in [("a_f0", 0, 0.30), ("a_f1", 1, 0.20), ("b_f0", 0, 0.24), ("b_f1", 1, 0.24),
                           ("c_f0", 0, 0.10)]:
        (runs / name).mkdir(parents=True)
        (runs / name / "params.yaml").write_text(yaml.safe_dump({"fold": fold}))
        complete = name != "c_f0"                                       # c's only run is unfinished
        (runs / name / "metrics.json").write_text(json.dumps({"complete": complete, "log_loss": ll}))
    assert compute.best_model(runs) == "b"                             # mean 0.24 < a's 0.25
