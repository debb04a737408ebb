"""05's submission for whatever test set a competition folder holds now, from the trained runs alone.

    predict_submission("data/cars", "runs", "runs/submission.csv")    # blend.json + each run's weights
    spec = blend_spec("runs", ["identity", "hflip"], progress=True)    # 04's space and size, other TTA ops
    predict_submission("data/cars", "runs", "runs/submission.csv", spec=spec)
    ids, probs = predict_blend(load_blend(f), "runs", comp, "train", comp.train, spec)   # lib.ops.validate
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from lib.core.paths import resolve
from lib.core.rundir import RunDir
from lib.data.competition import Competition, open_test_set
from lib.predict.blend import blend, blend_tests
from lib.predict.inference import PredictSpec, predict_images
from lib.predict.refit import mix
from lib.predict.submission import load_blend, make_submission, with_unreadable_rows, write_submission


def _blend_file(runs_dir):
    return resolve(runs_dir) / "ensemble" / "blend.json"


def blend_spec(runs_dir="runs", tta=None, predict_size=None, **settings) -> PredictSpec:
    """The ``PredictSpec`` 04 predicted the test set with: the TTA ops, space and size of its
    ``ensemble/blend.json`` (``tta``, a list of op names, replaces the ops and ``predict_size`` the size;
    None keeps 04's), and ``settings`` (batch_size, device, num_workers, progress) for this machine."""
    plan = load_blend(_blend_file(runs_dir))
    return PredictSpec(tta or plan["tta"], plan["tta_space"], size=predict_size or plan["predict_size"], **settings)


def predict_submission(data_dir, runs_dir="runs", submission="runs/submission.csv", models=None,
                       spec: PredictSpec | None = None, work: str | None = None) -> pd.DataFrame:
    """The submission for whatever test set ``data_dir`` holds now (a hidden one included), from the
    trained runs alone: 04's ``ensemble/blend.json`` (models, their runs, weights, temperature, TTA,
    size, how the fold models are averaged, class table) and each run's ``params.yaml`` and
    ``model.safetensors``. No training image, fold or class file is read. ``models`` keeps a subset
    (weights renormalised). ``spec``: how each run predicts (``blend_spec``; None: 04's TTA ops, space
    and size, no progress bars); ``predict_blend`` says what another spec leaves out. Test images that
    cannot be read get the class prior (uniform here: no training labels). Written like 04's (validated
    against the sample); returns it."""
    runs_dir = resolve(runs_dir)
    plan = load_blend(_blend_file(runs_dir))
    comp = open_test_set(data_dir, plan["class_table"], work)
    ids, probs = with_unreadable_rows(*predict_blend(plan, runs_dir, comp, "test", comp.test, spec, models), comp)
    sub = make_submission(probs, ids, comp.sample_submission, label_values=comp.label_values,
                          positive=comp.positive)
    write_submission(sub, resolve(submission), comp.sample_submission, comp.label_values)
    return sub


def predict_blend(plan: dict, runs_dir, comp: Competition, split: str, rows: pd.DataFrame,
                  spec: PredictSpec | None = None, models=None) -> tuple[np.ndarray, np.ndarray]:
    """(ids [N], probs [N, C]): 04's blend ``plan`` (``load_blend``) of the runs in ``runs_dir`` on ``rows``
    (id, path) of ``comp``'s ``split`` table ("test" or "train"), as 05 submits it: each model's runs
    averaged (its full-data refit mixed in as 04 did), the models blended with 04's weights, its
    temperature and decision offsets applied. ``models`` keeps a subset (weights renormalised); ``spec``
    (None: 04's TTA ops, space and size) must average in 04's space. Another model subset, other TTA ops
    or another size than 04's leave 04's temperature and decision offsets out (fitted for another
    prediction; a warning says so)."""
    runs_dir = resolve(runs_dir)
    spec = spec or PredictSpec(plan["tta"], plan["tta_space"], size=plan["predict_size"])
    if spec.space != plan["tta_space"]:
        raise ValueError(f"spec.space {spec.space!r}: 04 averaged its TTA ops in {plan['tta_space']!r} and fitted "
                         "the blend to that; build the spec with blend_spec")
    chosen = [m for m in plan["models"] if models is None or m in models]
    if not chosen:
        raise ValueError(f"models {models} are not in the blend; it has {list(plan['models'])}")
    tests = {}
    for m in chosen:
        dirs = [runs_dir / r for r in plan["models"][m]]
        missing = [str(d / f) for d in dirs for f in RunDir.PREDICT if not (d / f).exists()]
        if missing:
            raise FileNotFoundError(f"the blend needs {missing[:3]}; copy the runs (or make a bundle) with them")
        parts = [predict_images(d, comp, split, rows, spec) for d in dirs]
        tests[m] = _table(rows, blend(parts, np.ones(len(parts)), plan["fold_space"]), comp.classes)  # as 04 did
        refit = (plan.get("refit") or {}).get(m)  # 04's full-data refit of the model, mixed in (lib.predict.refit)
        if refit:
            full = _table(rows, predict_images(runs_dir / refit["run"], comp, split, rows, spec), comp.classes)
            tests[m] = mix(tests[m], full, refit["share"], comp.classes)
    weights = np.array([plan["weights"][m] for m in chosen])
    if weights.sum() <= 0:
        raise ValueError(f"models {chosen} have zero weight in the blend; choose others")
    offsets = plan.get("offsets")  # the decision layer's, per class name (None: plain argmax)
    offsets = [offsets[c] for c in comp.classes] if offsets else None
    temperature = plan["temperature"]
    asked = {"models": (chosen, list(plan["models"])), "tta": (list(spec.ops), list(plan["tta"])),
             "predict_size": (spec.size, plan["predict_size"])}
    changed = {k: now for k, (now, then) in asked.items() if now != then}
    if changed and (temperature != 1.0 or offsets):
        warnings.warn(f"04 fitted the temperature ({temperature:.4g}) and decision offsets for models "
                      f"{list(plan['models'])} with TTA {list(plan['tta'])} at predict_size {plan['predict_size']}; "
                      f"this prediction uses {', '.join(f'{k}={v}' for k, v in changed.items())}, so they do not "
                      "apply and the prediction is uncalibrated (argmax labels, T = 1): rerun 04 with these "
                      "settings to calibrate it", stacklevel=2)
        temperature, offsets = 1.0, None
    return blend_tests(tests, chosen, weights, plan["space"], temperature, comp.classes, offsets)


def _table(rows: pd.DataFrame, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """id + classes: ``probs`` [N, C] on ``rows`` (id, ...)."""
    return pd.concat([rows[["id"]].reset_index(drop=True), pd.DataFrame(probs, columns=classes)], axis=1)
