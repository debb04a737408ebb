"""Label competitions end to end, a hidden test set, and the offline bundle (lib.predict.inference, lib.ops.bundle).

A document-style competition (flat folders, train.csv ID,target, meta.csv, sample ID,target) is made
read-only, trained (2 folds), blended to a label submission; then a hidden test set replaces the
public one and is predicted from the runs alone, in-process and from a bundle installed offline in a
fresh virtual environment.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pandas as pd
import papermill as pm
import pytest
from shared import as_document_competition

from lib.core.config import TrainConfig
from lib.ops.offline import make_bundle
from lib.predict.crossfit import fit_blend
from lib.predict.inference import PredictSpec, tta_predictions
from lib.predict.oof import open_runs
from lib.predict.pipeline import predict_submission
from lib.predict.submission import write_ensemble
from lib.train.loop import train_fold

TTA = ["identity", "hflip"]


@pytest.fixture(scope="module")
def trained(_digits_source, tmp_path_factory):
    """(data folder, runs folder, 04's submission) of a document competition, 2 folds of test_resnet."""
    tmp = tmp_path_factory.mktemp("docs")
    data = as_document_competition(_digits_source, tmp / "docs", n_test=30)
    runs = tmp / "runs"
    for fold in (0, 1):
        train_fold(TrainConfig(data_dir=str(data), backbone="test_resnet", img_size=16, batch_size=32, epochs=1,
                               precision="fp32", n_folds=2, fold=fold, run_name=f"tres_f{fold}", runs_dir=str(runs),
                               progress=False, verbose=False))
    comp, found, oofs = open_runs(data, runs)
    with pytest.warns(UserWarning, match="TTA .* on test only"):
        tests, _ = tta_predictions(found, comp.classes, PredictSpec(TTA))
    b = fit_blend(oofs, comp.classes)
    sub = write_ensemble(b, tests, comp, runs, tmp / "submission.csv", found, TTA)
    return data, runs, sub


def _hidden(data: Path, dest: Path, src: Path) -> Path:
    """The competition with its test set swapped: 25 unseen images under new IDs, a new sample."""
    shutil.copytree(data, dest, ignore=shutil.ignore_patterns("test", "sample_submission.csv"))
    (dest / "test").mkdir()
    files = sorted((src / "test").glob("*.jpg"))[-25:]
    for k, f in enumerate(files):
        shutil.copy(f, dest / "test" / f"hidden_{k:03d}.jpg")
    pd.DataFrame({"ID": [f"hidden_{k:03d}.jpg" for k in range(len(files))], "target": 0}).to_csv(
        dest / "sample_submission.csv", index=False)
    return dest


def _check_label_submission(sub: pd.DataFrame, sample_csv: Path):
    sample = pd.read_csv(sample_csv)
    assert list(sub.columns) == list(sample.columns) and list(sub["ID"]) == list(sample["ID"])
    assert pd.api.types.is_integer_dtype(sub["target"]) and sub["target"].between(0, 9).all()


def test_label_submission_and_hidden_test_from_the_runs_alone(trained, _digits_source, tmp_path, monkeypatch):
    data, runs, sub = trained
    _check_label_submission(sub, data / "sample_submission.csv")
    written = pd.read_csv(runs.parent / "submission.csv")
    _check_label_submission(written, data / "sample_submission.csv")
    monkeypatch.setenv("FOLDBOOK_WORK", str(tmp_path / "work"))
    again = predict_submission(data, runs, tmp_path / "again.csv")
    assert again.equals(sub)                           # 05 on the public test set gives 04's submission
    hidden = _hidden(data, tmp_path / "hidden", _digits_source)
    shutil.rmtree(hidden / "train"), (hidden / "train.csv").unlink()   # no training data where 05 runs
    out = predict_submission(hidden, runs, tmp_path / "hidden.csv")
    _check_label_submission(out, hidden / "sample_submission.csv")
    with pytest.raises(FileNotFoundError, match="no blend file; run 04_ensemble_tta first"):
        predict_submission(hidden, tmp_path / "no_runs", tmp_path / "x.csv")


def test_05_leaves_04s_calibration_out_for_other_tta_and_fills_unreadable_images(trained, _digits_source,
                                                                                   tmp_path, monkeypatch):
    data, runs, _ = trained
    plan = json.loads((runs / "ensemble" / "blend.json").read_text())
    assert plan["temperature"] != 1.0 or plan.get("offsets")  # something fitted for 04's TTA
    monkeypatch.setenv("FOLDBOOK_WORK", str(tmp_path / "work"))
    hidden = _hidden(data, tmp_path / "hidden", _digits_source)
    (hidden / "test" / "hidden_003.jpg").write_bytes(b"\xff\xd8 cut short")
    with pytest.warns(UserWarning) as seen:
        out = predict_submission(hidden, runs, tmp_path / "plain.csv", spec=PredictSpec(["identity"]))
    said = " | ".join(str(w.message) for w in seen)
    assert "do not apply" in said and "tta=['identity']" in said      # 04 fitted them with identity + hflip
    assert "hidden_003.jpg" in said and "class prior" in said
    _check_label_submission(out, hidden / "sample_submission.csv")      # every row, the broken one too


@pytest.mark.slow
def test_bundle_runs_05_offline_in_a_fresh_environment(trained, _digits_source, tmp_path):
    data, runs, _ = trained
    bundle = make_bundle(runs, tmp_path / "bundle")
    assert sorted(p.name for p in (bundle / "wheels").iterdir())[0].startswith("foldbook-")
    assert not list(bundle.rglob("state.pt")) and (bundle / "runs" / "ensemble" / "blend.json").exists()
    with pytest.raises(FileExistsError):
        make_bundle(runs, bundle)
    assert make_bundle(runs, bundle, force=True) == bundle        # force replaces an older bundle...
    params = pm.inspect_notebook(str(bundle / "05_inference.ipynb"))   # 05's typed cell, pointed at the bundle
    assert params["runs_dir"]["default"] == repr(str(bundle / "runs"))
    assert params["wheels"]["default"] == repr(str(bundle / "wheels")) and params["wheels"]["help"].startswith("this")
    assert [params[k]["inferred_type_name"] for k in ("runs_dir", "wheels")] == ["str", "Optional[str]"]
    hidden = _hidden(data, tmp_path / "hidden", _digits_source)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    # the kernel's own packages (torch, timm, fastai, papermill...), as a Kaggle image has them
    (site / "kernel_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = venv / "bin" / "python"
    assert subprocess.run([python, "-c", "import lib"], cwd=tmp_path, capture_output=True).returncode != 0
    out = tmp_path / "sub.csv"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PIP_NO_INDEX": "1", "FOLDBOOK_WORK": str(tmp_path / "w")}
    run = subprocess.run([python, "-m", "papermill", str(bundle / "05_inference.ipynb"), str(tmp_path / "05.ipynb"),
                          "-p", "data_dir", str(hidden), "-p", "submission", str(out), "-p", "progress", "False",
                          "-k", "python3", "--cwd", str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    got = pd.read_csv(out)
    _check_label_submission(got, hidden / "sample_submission.csv")
    want = predict_submission(hidden, runs, tmp_path / "in_process.csv")
    assert np.array_equal(got["target"].to_numpy(), want["target"].to_numpy())


def test_force_never_deletes_a_folder_that_is_not_a_bundle_and_run_names_stay_in_runs(tmp_path):
    work = tmp_path / "important"
    work.mkdir()
    (work / "two_weeks_of_work.txt").write_text("notes")
    with pytest.raises(FileExistsError, match="is not a bundle .*nothing was deleted"):
        make_bundle(tmp_path / "runs", work, force=True)
    assert (work / "two_weeks_of_work.txt").read_text() == "notes"
    runs = tmp_path / "runs"
    (runs / "ensemble").mkdir(parents=True)
    (runs / "ensemble" / "blend.json").write_text(json.dumps({"models": {"m": ["m_f0", "../secret"]}}))
    with pytest.raises(ValueError, match=r"run names \['../secret'\] are not folder names"):
        make_bundle(runs, tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()
