"""05's submission for whatever test set a competition folder holds now, from the trained runs alone.

    predict_submission("data/cars", "runs", "runs/submission.csv")    # blend.json + each run's weights
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from lib.core.paths import resolve
from lib.core.rundir import RunDir
from lib.data.competition import open_test_set
from lib.predict.blend import blend_tests
from lib.predict.inference import predict_images
from lib.predict.submission import load_blend, make_submission, write_submission


def predict_submission(data_dir, runs_dir="runs", submission="runs/submission.csv", models=None, tta=None,
                       work: str | None = None, progress: bool = False) -> pd.DataFrame:
    """The submission for whatever test set ``data_dir`` holds now (a hidden one included), from the
    trained runs alone: 04's ``ensemble/blend.json`` (models, their runs, weights, temperature, TTA,
    class table) and each run's ``params.yaml`` and ``model.safetensors``. No training image, fold
    or class file is read. ``models`` keeps a subset (weights renormalised); ``tta`` replaces 04's
    ops. Written like 04's (validated against the sample); returns it."""

    runs_dir = resolve(runs_dir)
    plan = load_blend(runs_dir / "ensemble" / "blend.json")
    table = plan["class_table"]
    comp = open_test_set(data_dir, table, work)
    chosen = [m for m in plan["models"] if models is None or m in models]
    if not chosen:
        raise ValueError(f"models {models} are not in the blend; it has {list(plan['models'])}")
    ops = tta or plan["tta"]
    tests = {}
    for m in chosen:
        dirs = [runs_dir / r for r in plan["models"][m]]
        missing = [str(d / f) for d in dirs for f in RunDir.PREDICT if not (d / f).exists()]
        if missing:
            raise FileNotFoundError(f"the blend needs {missing[:3]}; copy the runs (or make a bundle) with them")
        probs = np.mean([predict_images(d, comp, "test", comp.test, ops, plan["tta_space"], progress=progress)
                         for d in dirs], axis=0)
        refit = (plan.get("refit") or {}).get(m)  # 04's full-data refit of the model, mixed in (lib.predict.refit)
        if refit:
            full = predict_images(runs_dir / refit["run"], comp, "test", comp.test, ops, plan["tta_space"],
                                  progress=progress)
            probs = (1 - refit["share"]) * probs + refit["share"] * full
        tests[m] = pd.concat([comp.test[["id"]], pd.DataFrame(probs, columns=comp.classes)], axis=1)
    weights = np.array([plan["weights"][m] for m in chosen])
    if weights.sum() <= 0:
        raise ValueError(f"models {chosen} have zero weight in the blend; choose others")
    offsets = plan.get("offsets")  # the decision layer's, per class name (None: plain argmax)
    offsets = [offsets[c] for c in comp.classes] if offsets else None
    ids, probs = blend_tests(tests, chosen, weights, plan["space"], plan["temperature"], comp.classes, offsets)
    sub = make_submission(probs, ids, comp.sample_submission, label_values=comp.label_values)
    write_submission(sub, resolve(submission), comp.sample_submission, comp.label_values)
    return sub
