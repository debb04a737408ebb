"""lib.predict.pipeline: 05 predicts as 04 recorded in blend.json, the size included (predict_size)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from lib.predict.crossfit import fit_blend
from lib.predict.inference import PredictSpec, predict_fold, tta_predictions
from lib.predict.oof import open_runs
from lib.predict.pipeline import blend_spec, predict_submission
from lib.predict.submission import write_ensemble


def test_05_predicts_at_04s_predict_size(digits_runs, tmp_path, monkeypatch):
    data, trained = digits_runs
    runs = shutil.copytree(trained, tmp_path / "runs")
    comp, found, oofs = open_runs(data, runs)
    spec = PredictSpec(size=24)                                       # trained at 16, predicted at 24
    tests, oofs24 = tta_predictions(found, comp.classes, spec, oof=True)
    run0 = predict_fold(runs / "tres_f0", spec, "oof").set_index("id")
    assert np.allclose(oofs24["tres"].set_index("id").loc[run0.index, comp.classes], run0[comp.classes])
    b = fit_blend(oofs24, comp.classes)
    sub = write_ensemble(b, tests, comp, runs, tmp_path / "submission.csv", found, predict_size=24)
    assert json.loads((runs / "ensemble" / "blend.json").read_text())["predict_size"] == 24
    assert blend_spec(runs).size == 24 and blend_spec(runs, predict_size=20).size == 20

    monkeypatch.setenv("FOLDBOOK_WORK", str(tmp_path / "work"))      # 05 writes nothing beside the data
    again = predict_submission(data, runs, tmp_path / "again.csv")   # 05, from blend.json alone
    assert again.equals(sub)
    if b.temperature != 1.0 or b.offsets is not None:                # 04 fitted them at 24 px
        with pytest.warns(UserWarning, match="uses predict_size=None, so they do not apply"):
            own = predict_submission(data, runs, tmp_path / "own.csv", spec=PredictSpec())
    else:
        own = predict_submission(data, runs, tmp_path / "own.csv", spec=PredictSpec())
    assert not np.allclose(own[comp.classes].to_numpy(), sub[comp.classes].to_numpy(), atol=1e-4)
