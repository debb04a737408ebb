"""lib.predict.validate and its command line lib.ops.validate: a run, or 04's blend, scored on a labelled
folder, predicted as 05 predicts; on the run's own validation fold it gives the run's OOF score."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from lib.core.paths import repo_root
from lib.data.competition import open_competition
from lib.ops.demo_data import score_submission
from lib.predict.crossfit import fit_blend
from lib.predict.inference import PredictSpec, tta_predictions
from lib.predict.oof import open_runs
from lib.predict.pipeline import predict_submission
from lib.predict.submission import write_ensemble
from lib.predict.validate import validate


def _image_folder(paths, labels, root):
    """timm's layout: <root>/<class>/<file>, the files copied byte for byte."""
    for p, c in zip(paths, labels):
        (root / c).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, root / c)
    return root


def _cli(*args) -> str:
    env = {**os.environ, "PYTHONPATH": str(repo_root())}
    out = subprocess.run([sys.executable, "-m", "lib.ops.validate", *map(str, args)], cwd=repo_root(), env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _scores(stdout: str) -> dict:
    return {k: float(v) for k, v in re.findall(r"(log_loss|accuracy|f1_macro) ([0-9.]+)", stdout)}


def test_a_run_on_its_own_validation_fold_scores_its_oof(digits_runs, tmp_path):
    data, runs = digits_runs
    run = runs / "tres_f0"
    classes = json.loads((run / "classes.json").read_text())["classes"]
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
    paths = open_competition(data).train.set_index("id").loc[oof["id"], "path"]
    folder = _image_folder(paths, [classes[t] for t in oof["target"]], tmp_path / "fold0")
    out = tmp_path / "fold0.csv"
    said = _cli("--run", run, "--data", folder, "--out", out)
    assert f"{len(oof)} images scored" in said
    metrics = json.loads((run / "metrics.json").read_text())
    got = _scores(said)
    for k in ("log_loss", "accuracy", "f1_macro"):
        assert got[k] == pytest.approx(metrics[k], abs=2e-6), k              # the OOF score, 6 printed digits
    table = pd.read_csv(out, dtype={"id": str}).set_index("id").loc[oof["id"]]
    assert np.allclose(table[classes].to_numpy(), oof[classes].to_numpy(), atol=1e-6)  # row for row
    assert (table["target"].to_numpy() == oof["target"].to_numpy()).all()
    assert not list(tmp_path.glob("*.tmp*"))                                 # written atomically, nothing left


def test_the_blend_scores_as_05s_submission_on_labelled_test_images(digits_runs, tmp_path, monkeypatch):
    data, trained = digits_runs
    runs = shutil.copytree(trained, tmp_path / "runs")
    comp, found, oofs = open_runs(data, runs)
    spec = PredictSpec(size=20)
    tests, oofs20 = tta_predictions(found, comp.classes, spec, oof=True)
    write_ensemble(fit_blend(oofs20, comp.classes), tests, comp, runs, tmp_path / "submission.csv", found,
                   predict_size=20)
    monkeypatch.setenv("FOLDBOOK_WORK", str(tmp_path / "work"))
    sub = predict_submission(data, runs, tmp_path / "05.csv")                  # 05: TTA, size, temperature
    want = score_submission(data, sub)
    sol = pd.read_csv(data / "solution.csv", dtype={"ID": str})
    folder = _image_folder([data / "test" / f"{i}.jpg" for i in sol["ID"]], sol["label"], tmp_path / "labelled")
    got = validate(folder, blend=runs / "ensemble" / "blend.json")
    assert got["spec"].size == 20 and got["n"] == len(sol)
    assert got["log_loss"] == pytest.approx(want["test_log_loss"], abs=1e-9)
    assert got["accuracy"] == pytest.approx(want["test_accuracy"], abs=1e-9)
    assert got["out"] == runs / "validate" / "labelled-blend.csv" and got["out"].exists()
    said = _cli("--blend", runs / "ensemble" / "blend.json", "--data", folder)  # the same from the command line
    assert _scores(said)["log_loss"] == pytest.approx(want["test_log_loss"], abs=1e-6)


def test_unknown_labels_are_refused_and_unreadable_images_named(digits_runs, tmp_path):
    data, runs = digits_runs
    run = runs / "tres_f0"
    classes = json.loads((run / "classes.json").read_text())["classes"]
    src = sorted((data / "train" / classes[3]).glob("*.jpg"))[:4]
    folder = _image_folder(src, [classes[3]] * 4, tmp_path / "held")
    (folder / classes[3] / "broken.jpg").write_bytes(b"\xff\xd8 cut short")
    (folder / classes[3] / "notes.txt").write_text("not an image")
    got = validate(folder, runs=[run], out=tmp_path / "p.csv")
    assert got["n"] == 4 and sorted(os.path.basename(p) for p in got["problems"]["path"]) == ["broken.jpg",
                                                                                             "notes.txt"]
    said = _cli("--run", run, "--data", folder, "--out", tmp_path / "q.csv")
    assert "not scored:" in said and "broken.jpg" in said
    _image_folder(src[:1], ["고래"], folder)
    with pytest.raises(ValueError, match="labels \\['고래'\\] are not classes the runs predict"):
        validate(folder, runs=[run])
    with pytest.raises(ValueError, match="give runs .* or blend"):
        validate(folder)
