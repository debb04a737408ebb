"""05's submission for whatever test set a competition folder holds now, from the trained runs alone.

    predict_submission("data/cars", "runs", "runs/submission.csv")    # blend.json + each run's weights
    spec = blend_spec("runs", ["identity", "hflip"], progress=True)    # 04's space, other TTA ops
    predict_submission("data/cars", "runs", "runs/submission.csv", spec=spec)
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from lib.core.paths import resolve
from lib.core.rundir import RunDir
from lib.data.competition import open_test_set
from lib.predict.blend import blend, blend_tests
from lib.predict.inference import PredictSpec, predict_images
from lib.predict.refit import mix
from lib.predict.submission import load_blend, make_submission, with_unreadable_rows, write_submission


def _blend_file(runs_dir):
    return resolve(runs_dir) / "ensemble" / "blend.json"


def blend_spec(runs_dir="runs", tta=None, **settings) -> PredictSpec:
    """The ``PredictSpec`` 04 predicted the test set with: the TTA ops and space of its
    ``ensemble/blend.json`` (``tta``, a list of op names, replaces the ops; None keeps 04's), and
    ``settings`` (batch_size, device, num_workers, progress) for this machine."""
    plan = load_blend(_blend_file(runs_dir))
    return PredictSpec(tta or plan["tta"], plan["tta_space"], **settings)


def predict_submission(data_dir, runs_dir="runs", submission="runs/submission.csv", models=None,
                       spec: PredictSpec | None = None, work: str | None = None) -> pd.DataFrame:
    """The submission for whatever test set ``data_dir`` holds now (a hidden one included), from the
    trained runs alone: 04's ``ensemble/blend.json`` (models, their runs, weights, temperature, TTA,
    how the fold models are averaged, class table) and each run's ``params.yaml`` and
    ``model.safetensors``. No training image, fold or class file is read. ``models`` keeps a subset
    (weights renormalised). ``spec``: how each run predicts (``blend_spec``; None: 04's TTA ops and
    space, no progress bars); its ``space`` must be 04's. Another model subset or other TTA ops than
    04's leave 04's temperature and decision offsets out (fitted for another prediction; a warning
    says so). Test images that cannot be read get the class prior (uniform here: no training labels).
    Written like 04's (validated against the sample);
    returns it."""

    runs_dir = resolve(runs_dir)
    plan = load_blend(_blend_file(runs_dir))
    spec = spec or PredictSpec(plan["tta"], plan["tta_space"])
    if spec.space != plan["tta_space"]:
        raise ValueError(f"spec.space {spec.space!r}: 04 averaged its TTA ops in {plan['tta_space']!r} and fitted "
                         "the blend to that; build the spec with blend_spec")
    table = plan["class_table"]
    comp = open_test_set(data_dir, table, work)
    chosen = [m for m in plan["models"] if models is None or m in models]
    if not chosen:
        raise ValueError(f"models {models} are not in the blend; it has {list(plan['models'])}")
    tests = {}
    for m in chosen:
        dirs = [runs_dir / r for r in plan["models"][m]]
        missing = [str(d / f) for d in dirs for f in RunDir.PREDICT if not (d / f).exists()]
        if missing:
            raise FileNotFoundError(f"the blend needs {missing[:3]}; copy the runs (or make a bundle) with them")
        parts = [predict_images(d, comp, "test", comp.test, spec) for d in dirs]
        tests[m] = _test_table(comp, blend(parts, np.ones(len(parts)), plan["fold_space"]))  # as 04 averaged them
        refit = (plan.get("refit") or {}).get(m)  # 04's full-data refit of the model, mixed in (lib.predict.refit)
        if refit:
            full = _test_table(comp, predict_images(runs_dir / refit["run"], comp, "test", comp.test, spec))
            tests[m] = mix(tests[m], full, refit["share"], comp.classes)
    weights = np.array([plan["weights"][m] for m in chosen])
    if weights.sum() <= 0:
        raise ValueError(f"models {chosen} have zero weight in the blend; choose others")
    offsets = plan.get("offsets")  # the decision layer's, per class name (None: plain argmax)
    offsets = [offsets[c] for c in comp.classes] if offsets else None
    temperature = plan["temperature"]
    changed = {k: v for k, v in (("models", chosen), ("tta", list(spec.ops)))
               if v != (list(plan["models"]) if k == "models" else list(plan["tta"]))}
    if changed and (temperature != 1.0 or offsets):
        warnings.warn(f"04 fitted the temperature ({temperature:.4g}) and decision offsets for models "
                      f"{list(plan['models'])} with TTA {list(plan['tta'])}; this prediction uses "
                      f"{', '.join(f'{k}={v}' for k, v in changed.items())}, so they do not apply and the "
                      "submission is uncalibrated (argmax labels, T = 1): rerun 04 with these settings to "
                      "calibrate it", stacklevel=2)
        temperature, offsets = 1.0, None
    ids, probs = with_unreadable_rows(*blend_tests(tests, chosen, weights, plan["space"], temperature,
                                                   comp.classes, offsets), comp)
    sub = make_submission(probs, ids, comp.sample_submission, label_values=comp.label_values,
                          positive=comp.positive)
    write_submission(sub, resolve(submission), comp.sample_submission, comp.label_values)
    return sub


def _test_table(comp, probs: np.ndarray) -> pd.DataFrame:
    """id + classes: ``probs`` [N, C] on the rows of ``comp.test``."""
    return pd.concat([comp.test[["id"]], pd.DataFrame(probs, columns=comp.classes)], axis=1)
