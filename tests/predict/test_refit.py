"""lib.predict.refit: a full-data run trains on every image and writes test.csv but no OOF, the runs tables leave it
out, the epochs the CV chose, 04's replace / blend math, and 05 predicting the refit blend the same way."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from lib.core.config import TrainConfig
from lib.core.rundir import cv_epochs, find_runs
from lib.ops.jobs import make_jobs
from lib.predict.crossfit import fit_blend
from lib.predict.inference import PredictSpec
from lib.predict.oof import load_test, open_runs
from lib.predict.pipeline import blend_spec, predict_submission
from lib.predict.refit import refit_tests
from lib.predict.submission import load_blend, write_ensemble
from lib.train.loop import setup_run, train_fold

TINY = dict(backbone="test_resnet", n_folds=3, img_size=16, batch_size=32, epochs=2, lr=3e-3,
            progress=False, verbose=False, num_workers=0)
TINY["precision"] = "fp32"  # figures that must not depend on whether this CPU has native bf16 (lib.core.precision)


def _fake_run(d, metrics: dict, test: pd.DataFrame | None = None, **params) -> None:
    d.mkdir(parents=True)
    (d / "params.yaml").write_text(yaml.safe_dump({"fold": 0, "best_epoch": "last", **params}))  # as 02 writes it
    (d / "metrics.json").write_text(json.dumps({"complete": True, **metrics}))
    if test is not None:
        test.to_csv(d / "test.csv", index=False)


def test_full_data_run_trains_on_every_image_and_writes_no_oof(digits_comp, tmp_path):
    runs = tmp_path / "runs"
    for k in range(3):
        train_fold(TrainConfig(data_dir=str(digits_comp), runs_dir=str(runs), fold=k, **TINY))
    assert cv_epochs(runs, "test_resnet") == 2                       # best_epoch last: the recipe's epochs
    run = setup_run(TrainConfig(data_dir=str(digits_comp), runs_dir=str(runs), full_data=True, **TINY))
    assert run.dir.name == "test_resnet_full"
    assert sorted(run.data.train_rows["id"]) == sorted(run.comp.train["id"]) and len(run.data.train) == 200
    m = train_fold(run.cfg)
    d = runs / "test_resnet_full"
    assert (d / "test.csv").exists() and not (d / "oof.csv").exists()
    assert m["full_data"] and m["fold"] is None and "log_loss" not in m and 0 <= m["train_sample"]["accuracy"] <= 1
    assert json.loads((d / "metrics.json").read_text())["full_data"]
    comp, found, oofs = open_runs(digits_comp, runs)                 # 03 and 04: the full run is no OOF model
    assert list(found["run_name"]) == [f"test_resnet_f{k}" for k in range(3)] and list(oofs) == ["test_resnet"]
    assert "test_resnet_full" in set(find_runs(runs)["run_name"])
    assert list(find_runs(runs, full_data=False)["run_name"]) == [f"test_resnet_f{k}" for k in range(3)]


def test_cv_epochs_is_the_median_kept_epoch_and_the_grid_launches_the_refit(tmp_path):
    runs = tmp_path / "runs"
    for k, e in enumerate((3, 5, 4)):
        _fake_run(runs / f"demo_f{k}", {"weights_epoch": e}, fold=k)
    assert cv_epochs(runs, "demo") == 5                              # kept epochs 4, 6, 5 (from 1)
    with pytest.raises(ValueError, match="train its folds first"):
        cv_epochs(runs, "other")
    recipe = tmp_path / "demo.yaml"
    recipe.write_text(yaml.safe_dump({"backbone": "test_resnet", "epochs": 9, "n_folds": 3}))
    (job,) = make_jobs([recipe], [0, 1, 2], runs, full=True)
    assert (job.run_name, job.cfg.full_data, job.cfg.epochs) == ("demo_full", True, 5)
    cmd = job.command()
    assert cmd[cmd.index("-y") + 1] == "{epochs: 5, full_data: true}\n"
    with pytest.raises(ValueError, match="full_data with best_epoch 'monitor'"):
        TrainConfig(full_data=True, best_epoch="monitor")


def test_refit_replace_and_blend_math(tmp_path):
    classes = ["a", "b", "c"]
    rng = np.random.default_rng(0)
    ids = [f"t{i}" for i in range(5)]

    def table(p, order=None):
        df = pd.DataFrame(p, columns=classes)
        df.insert(0, "id", ids)
        return df.iloc[order].reset_index(drop=True) if order is not None else df
    fold_mean, full = rng.dirichlet(np.ones(3), 5), rng.dirichlet(np.ones(3), 5)
    tests = {"m": table(fold_mean), "other": table(fold_mean[::-1])}
    for k in range(3):  # m's fold runs: the full run is a refit of their recipe, for the epochs they kept
        _fake_run(tmp_path / f"m_f{k}", {"weights_epoch": 5}, fold=k)
    _fake_run(tmp_path / "m_full", {}, table(full, order=[4, 2, 0, 1, 3]), full_data=True)  # rows in another order
    got, refits = refit_tests(tests, tmp_path, classes, "replace")
    assert np.allclose(got["m"][classes].to_numpy(), full) and list(got["m"]["id"]) == ids
    assert got["other"] is tests["other"] and list(refits["model"]) == ["m"]      # no full run: its fold mean
    got, refits = refit_tests(tests, tmp_path, classes, "blend", share=0.25)
    assert np.allclose(got["m"][classes].to_numpy(), 0.75 * fold_mean + 0.25 * full)
    assert refits.to_dict("records") == [{"model": "m", "full_run": "m_full", "share": 0.25}]
    assert refit_tests(tests, tmp_path, classes, "none")[0]["m"] is tests["m"]
    with pytest.raises(ValueError, match="refit_share"):
        refit_tests(tests, tmp_path, classes, "blend", share=1.0)
    with pytest.warns(UserWarning, match="no.*full-data run|has a complete full-data run"):
        refit_tests({"other": tests["other"]}, tmp_path, classes, "replace")


def test_04_refit_reaches_the_submission_and_05_predicts_it_the_same_way(digits_comp, tmp_path):
    runs = tmp_path / "runs"
    for k in range(3):
        train_fold(TrainConfig(data_dir=str(digits_comp), runs_dir=str(runs), fold=k, **TINY))
    train_fold(TrainConfig(data_dir=str(digits_comp), runs_dir=str(runs), full_data=True, **TINY))
    comp, found, oofs = open_runs(digits_comp, runs)
    tests = load_test(found, comp.classes)
    b = fit_blend(oofs, comp.classes)
    tests, refits = refit_tests(tests, runs, comp.classes, "blend", share=0.4)
    full = pd.read_csv(runs / "test_resnet_full" / "test.csv", dtype={"id": str})
    fold_mean = load_test(found, comp.classes)["test_resnet"]
    assert np.allclose(tests["test_resnet"][comp.classes], 0.6 * fold_mean[comp.classes] + 0.4 * full[comp.classes])
    sub = write_ensemble(b, tests, comp, runs, tmp_path / "sub.csv", found, refits=refits)
    plan = load_blend(runs / "ensemble" / "blend.json")             # written once, the refit with the rest
    assert plan["refit"] == {"test_resnet": {"run": "test_resnet_full", "share": 0.4}}
    again = predict_submission(digits_comp, runs, tmp_path / "again.csv")
    assert np.allclose(again.iloc[:, 1:].to_numpy(), sub.iloc[:, 1:].to_numpy(), atol=1e-5)
    write_ensemble(b, tests, comp, runs, tmp_path / "sub.csv", found)   # without it, 05 would predict the fold mean
    assert load_blend(runs / "ensemble" / "blend.json")["refit"] == {}
    plain = predict_submission(digits_comp, runs, tmp_path / "plain.csv")
    assert not np.allclose(plain.iloc[:, 1:].to_numpy(), sub.iloc[:, 1:].to_numpy(), atol=1e-3)
    assert blend_spec(runs) == PredictSpec(["identity"], "prob")        # 04's TTA ops and space
    assert blend_spec(runs, ["hflip"], progress=True) == PredictSpec(["hflip"], "prob", progress=True)
    with pytest.raises(ValueError, match="blend_spec"):  # 04 fitted its blend to prob-averaged TTA
        predict_submission(digits_comp, runs, tmp_path / "logit.csv", spec=PredictSpec(space="logit"))


def test_a_stale_refit_is_refused_naming_both_runs_and_what_changed(tmp_path):
    """Fold runs retrained (--force) on another recipe leave the old <model>_full behind: 04 refuses to mix it
    in, naming the refit, the fold runs and the settings; the settings a refit changes by rule are no change."""
    classes = ["a", "b"]
    test = pd.DataFrame({"id": ["t0", "t1"], "a": [0.3, 0.6], "b": [0.7, 0.4]})
    for k in range(3):
        _fake_run(tmp_path / f"m_f{k}", {"weights_epoch": 3}, fold=k, lr=2e-3, best_epoch="monitor", patience=2,
                  run_name=f"m_f{k}")
    _fake_run(tmp_path / "m_full", {}, test, full_data=True, epochs=4, run_name="m_full", lr=2e-3)
    got, refits = refit_tests({"m": test}, tmp_path, classes, "replace")   # fold, epochs, best_epoch, patience: rule
    assert list(refits["full_run"]) == ["m_full"]
    (tmp_path / "m_full" / "params.yaml").write_text(yaml.safe_dump(
        {"fold": 0, "best_epoch": "last", "full_data": True, "epochs": 4, "run_name": "m_full", "lr": 1e-3,
         "aug": "heavy"}))
    with pytest.raises(ValueError, match=r"m_full was trained on another recipe than m's fold runs") as e:
        refit_tests({"m": test}, tmp_path, classes, "blend")
    msg = str(e.value)
    for part in ("aug 'heavy' in m_full, 'light' in m_f0", "lr 0.001 in m_full, 0.002 in m_f0, 0.002 in m_f1",
                 "--full --force", "refit 'none'"):
        assert part in msg, (part, msg)
    assert refit_tests({"m": test}, tmp_path, classes, "none")[0]["m"] is test     # none: nothing checked


def test_a_refit_of_other_epochs_than_the_folds_now_choose_is_named(tmp_path):
    test = pd.DataFrame({"id": ["t0"], "a": [0.3], "b": [0.7]})
    for k in range(3):
        _fake_run(tmp_path / f"m_f{k}", {"weights_epoch": 9}, fold=k, epochs=10)   # retrained for 10 epochs
    _fake_run(tmp_path / "m_full", {}, test, full_data=True, epochs=6)             # the refit of the 6-epoch folds
    with pytest.warns(UserWarning, match=r"m_full trained 6 epochs, m's fold runs now choose 10 \(cv_epochs\)"):
        refit_tests({"m": test}, tmp_path, ["a", "b"], "replace")
    (tmp_path / "m_f1").rename(tmp_path / "gone")
    (tmp_path / "m_f0").rename(tmp_path / "gone0"), (tmp_path / "m_f2").rename(tmp_path / "gone2")
    with pytest.raises(ValueError, match="m_full: no completed fold run of 'm'"):
        refit_tests({"m": test}, tmp_path, ["a", "b"], "replace")


def test_a_full_data_refit_refuses_the_plateau_schedule():
    with pytest.raises(ValueError, match="full_data with schedule plateau: its lr drops when the validation monitor"):
        TrainConfig(full_data=True, schedule="plateau")
    assert TrainConfig(schedule="plateau").schedule == "plateau"                    # a fold run may
