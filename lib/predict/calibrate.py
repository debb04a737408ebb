"""Calibrating what is submitted, and the score to expect from it.

The temperature of a blend is fitted on OOF predictions, where every row comes from one fold model.
A test row is the mean of K fold models (and TTA views), which is *more* accurate than any one of
them, so the OOF temperature does not fit it. ``calibrate_test`` finds the test temperature without
reading a test label, from the fold models' predictions of the test images (each fold's runs blended
as one OOF row is: ``fold_members``) and how they differ:

- each fold model's centred logits (log-probabilities minus the row mean) are signal s plus its own
  noise (variance ``noise``: the spread between fold models, per image and class); one fold model's
  variance is V1 = Vs + noise, so Vs = V1 - noise; the submitted prediction's variance Vsub is
  measured the same way (a mean of K logits would have Vs + noise / K);
- from a prediction x of variance Vx, s is known up to a shrink a = Vs / Vx and a remaining variance
  v = a (Vx - Vs) (Gaussian); a softmax over an uncertain logit is flatter by sqrt(1 + pi v / 8)
  (the probit approximation), so the temperature that calibrates x is proportional to
  sqrt(1 + pi v / 8) / a;
- one fold model is calibrated at the OOF temperature T, so the submission gets
  T x [sqrt(1 + pi v_sub / 8) / a_sub] / [sqrt(1 + pi v_1 / 8) / a_1] (``ensemble_temperature``).

Where the fold models agree (no noise) this is the OOF temperature; the more they disagree, the
sharper the submission is made. It replaces matching one fold model's entropy, which left a fold mean
of fold models that see the truth through noise too soft (extra temperature 0.69-0.81). The mean of
probabilities is not quite "signal + noise / K": where fold models disagree by more than the signal
varies, it is made too sharp (extra temperature ~1.3 where the noise's spread is 1.7 x the signal's). Measured on
the demos: bench/README.md, "Calibration of the fold mean". ``sharpness`` shows the evidence: mean
max-probability, entropy and logit variance of each prediction.

``expected_score`` turns the cross-fitted OOF predictions (``lib.predict.crossfit``) into the score to expect
on a test set of the submission's size, with an interval.

A pseudo-labelled student (a run whose recipe sets ``pseudo_labels``) trained on test images: its
test predictions are of rows it saw, as sharp as no fold model's OOF row is, so neither the test
temperature nor the expected score describes a blend that holds one. ``calibrate_test`` names such
runs in a warning, keeps the OOF temperature and records them (``Blend.pseudo_labelled``);
``expected_score`` says so in its result.

    b, evidence = calibrate_test(b, tests, runs, comp.classes)     # Blend with test_temperature set
    expected_score(b, n_test=len(comp.test))
"""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

from lib.core.metrics import TEMPERATURE_BOUNDS, apply_temperature, get_metric, probs_to_logits, score
from lib.core.rundir import RunDir, load_config
from lib.predict.blend import Blend, blend, blend_tests


def mean_entropy(probs) -> float:
    """Mean entropy in nats of probs [N, C] (0: one-hot rows; log C: uniform rows)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-15, 1.0)
    return float(-(p * np.log(p)).sum(axis=1).mean())


def pseudo_labelled_runs(runs: pd.DataFrame) -> list[str]:
    """Names of the runs in ``runs`` whose recipe (``params.yaml``) sets ``pseudo_labels``: students
    that trained on test images. A runs table made by hand (no ``params.yaml`` in a run's ``dir``)
    has none."""
    return [r.run_name for r in runs.itertuples()
            if (Path(r.dir) / RunDir.PARAMS).exists() and load_config(r.dir).pseudo_labels]


def fold_members(b: Blend, runs: pd.DataFrame, run_tests: dict, classes: list[str], ids,
                 given: dict | None = None) -> list[np.ndarray]:
    """Per fold k, the test predictions [N, C] of fold k's runs blended with ``b``'s weights and space
    (rows in ``ids`` order): what one OOF row of the blend is, but on the test images. ``given``
    ({model: id + classes}): members without fold runs (a teammate's file), the same prediction in
    every fold. Folds where a weighted model has neither a run nor a given prediction are left out."""
    given = given or {}
    used = [m for m, w in zip(b.models, b.weights) if w > 0]
    out = []
    for _, g in runs[runs["model"].isin(used)].groupby("fold"):
        by_model = dict(zip(g["model"], g["run_name"]))
        if set(by_model) | set(given) != set(used):
            continue
        tables = [given[m] if m in given else run_tests[by_model[m]] for m in used]
        arrs = [t.set_index("id").loc[ids, classes].to_numpy(np.float64) for t in tables]
        out.append(blend(arrs, [w for w in b.weights if w > 0], b.space))
    return out


def centred_logits(probs) -> np.ndarray:
    """[N, C] log-probabilities minus each row's mean (a softmax ignores a shift per row)."""
    z = probs_to_logits(probs)
    return z - z.mean(axis=1, keepdims=True)


def ensemble_temperature(T: float, members: list[np.ndarray], submitted: np.ndarray) -> tuple[float, dict]:
    """(temperature for ``submitted``, its evidence): ``members`` are K >= 2 predictions [N, C]
    (probabilities) of the same test rows, each calibrated at temperature ``T`` (one fold model, as an
    OOF row is); ``submitted`` [N, C] is their mean (or any mix of them with other predictions),
    before any temperature. The module doc derives it; evidence: signal (Vs), noise (the spread
    between members), member and submitted variances of the centred logits, and their ratio
    (``T_sub / T``). With members that differ by more than they vary (no signal left to shrink
    towards) the OOF temperature is kept."""
    Z = np.stack([centred_logits(p) for p in members])                  # [K, N, C]
    if len(Z) < 2:
        raise ValueError(f"ensemble_temperature needs at least 2 members (fold models), got {len(Z)}")
    noise = float(Z.var(axis=0, ddof=1).mean())                          # between fold models
    one = float(np.mean([z.var() for z in Z]))                          # one fold model: Vs + noise
    sub = float(centred_logits(submitted).var())
    signal = one - noise
    ev = {"signal_var": signal, "noise_var": noise, "member_var": one, "submitted_var": sub}
    if signal <= 0:
        return float(T), {**ev, "ratio": 1.0}

    def scale(v_x: float) -> float:  # the temperature that calibrates a prediction of variance v_x, up to T's unit
        a = signal / max(v_x, signal)
        return float(np.sqrt(1 + np.pi * a * max(v_x - signal, 0.0) / 8) / a)
    ratio = scale(sub) / scale(one)
    T_sub = float(np.clip(T * ratio, *TEMPERATURE_BOUNDS))
    return T_sub, {**ev, "ratio": ratio}


def calibrate_test(b: Blend, tests: dict, runs: pd.DataFrame, classes: list[str],
                   run_tests: dict | None = None, given: dict | None = None) -> tuple[Blend, pd.DataFrame]:
    """(blend with ``test_temperature`` set, evidence table).

    tests: each model's fold-mean test predictions (``tta_predictions``); run_tests: each run's own
    test predictions built like the OOF the blend was fitted on ({run_name: id + classes}; None: the
    runs' test.csv, which is right unless the OOF was re-predicted with TTA); given: models of the
    blend that have no runs (``fold_members``). The test temperature is ``ensemble_temperature``: the
    OOF temperature, scaled by how much less noisy the submitted prediction is than one fold model, as
    the spread between the fold models on the test images says (the module doc). Nothing changes
    with the OOF temperature off (``temperature_fitted`` False), with fewer than 2 folds, or when a
    weighted model has a pseudo-labelled run (named in a warning and in ``pseudo_labelled``: it
    trained on the test images, so the fold models' spread there is no evidence).
    """
    used = [m for m, w in zip(b.models, b.weights) if w > 0]
    b = dataclasses.replace(b, pseudo_labelled=tuple(pseudo_labelled_runs(runs[runs["model"].isin(used)])))
    if b.pseudo_labelled:
        warnings.warn(f"runs {list(b.pseudo_labelled)} trained on pseudo-labelled test images (pseudo_labels in "
                      "their recipe): they predict test rows they trained on, so the test temperature (from the "
                      "fold models' spread on those rows) and the expected score (OOF rows) do not apply to this "
                      f"blend; the submission keeps the OOF temperature T={b.temperature:.4g}. Leave them out "
                      "(models=[...]) for numbers that hold", stacklevel=2)
    if b.pseudo_labelled or not b.temperature_fitted:
        return b, sharpness(b, None, None)
    if run_tests is None:
        run_tests = {r.run_name: pd.read_csv(Path(r.dir) / RunDir.TEST, dtype={"id": str}) for r in runs.itertuples()}
    ids, submitted = blend_tests(tests, b.models, b.weights, b.space, 1.0, classes)  # before any temperature
    members = fold_members(b, runs, run_tests, classes, ids, given)
    if len(members) < 2:
        return b, sharpness(b, None, None)
    T, ev = ensemble_temperature(b.temperature, members, submitted)
    out = dataclasses.replace(b, test_temperature=T)
    return out, sharpness(out, members, submitted, ev)


def sharpness(b: Blend, members, submitted, ev: dict | None = None) -> pd.DataFrame:
    """Mean max-probability, mean entropy (nats) and the variance of the centred logits of: the OOF
    blend at the OOF temperature; one fold model on the test images at the OOF temperature (mean over
    folds); the spread between fold models (``logit_var`` only: ``ensemble_temperature``'s noise); the
    submitted fold mean at the OOF temperature and at the test temperature. Before offsets."""
    oof = apply_temperature(probs_to_logits(b.uncalibrated), b.temperature)
    rows = [("OOF: one fold model per row", b.temperature, oof)]
    if members is not None:
        z = probs_to_logits(submitted)
        rows += [(f"test: one fold model ({len(members)} folds, mean)", b.temperature,
                  [apply_temperature(probs_to_logits(p), b.temperature) for p in members]),
                 ("test: spread between fold models (noise)", None, None),
                 ("test: fold mean, OOF temperature", b.temperature, apply_temperature(z, b.temperature)),
                 ("test: fold mean, test temperature (submitted)", b.test_temperature,
                  apply_temperature(z, b.test_temperature))]

    def stats(p, T):
        if p is None:
            return np.nan, np.nan, ev["noise_var"] / T ** 2 if ev else np.nan
        ps = p if isinstance(p, list) else [p]
        return (float(np.mean([q.max(axis=1).mean() for q in ps])), float(np.mean([mean_entropy(q) for q in ps])),
                float(np.mean([centred_logits(q).var() for q in ps])))
    keys = ("mean_max_prob", "mean_entropy", "logit_var")
    return pd.DataFrame([{"predictions": name, "T": round(T if T is not None else b.temperature, 4),
                          **dict(zip(keys, stats(p, T if T is not None else b.temperature)))}
                         for name, T, p in rows])


def expected_score(b: Blend, metric: str | None = None, n_test: int | None = None, n_boot: int = 1000,
                   level: float = 0.9, seed: int = 0) -> dict:
    """The score to expect on a test set of ``n_test`` rows, from the cross-fitted OOF predictions
    ``b.cross_probs`` [N, C] (in-sample ``b.probs`` when the OOF had no folds, said in ``basis``).

    expected: the metric over all OOF rows. The ``level`` interval adds two spreads: the test set's
    own sampling (the metric of ``n_test`` rows drawn with replacement, ``n_boot`` times) and the
    spread between models trained on other rows (the standard deviation of the per-fold scores);
    the submission averages fold models, which usually scores a little better than one of them.
    Normal approximation, clipped to the metric's range. ``metric``: None is the blend's, the
    competition's (``b.metric``; ``metric_source`` in the result says where it came from).
    ``pseudo_labelled``: the blend's runs that trained on test images (``calibrate_test`` finds them;
    warned about here too): the OOF rows say nothing about their test rows, so with any the number is
    not what the submission can expect.
    """
    metric = metric or b.metric
    fn, _ = get_metric(metric)
    cross = b.cross_probs is not None
    probs, y = (b.cross_probs if cross else b.probs), np.asarray(b.y, dtype=np.int64)
    n = int(n_test or len(y))
    rng = np.random.default_rng(seed)
    boots = np.array([fn(y[i], probs[i]) for i in (rng.integers(0, len(y), n) for _ in range(n_boot))])
    folds = np.unique(b.folds) if b.folds is not None else []
    per_fold = [fn(y[b.folds == k], probs[b.folds == k]) for k in folds]
    fold_sd = float(np.std(per_fold, ddof=1)) if len(per_fold) > 1 else 0.0
    z = float(norm.ppf((1 + level) / 2))
    half = z * float(np.hypot(boots.std(ddof=1), fold_sd))
    expected = score(metric, y, probs)
    top = np.inf if metric == "log_loss" else 1.0  # the metric's range: the interval stays inside it
    basis = "cross-fitted OOF" if cross else "in-sample OOF (no folds: optimistic)"
    if b.pseudo_labelled:
        basis += f"; does not apply: pseudo-labelled runs {list(b.pseudo_labelled)} trained on the test images"
        warnings.warn(f"expected score: runs {list(b.pseudo_labelled)} trained on pseudo-labelled test images, so "
                      "their test predictions are not out-of-fold and the OOF score is not what the submission "
                      "gets", stacklevel=2)
    source = b.metric_source if metric == b.metric else "given"
    return {"metric": metric, "metric_source": source,
            "expected": expected, "low": max(expected - half, 0.0), "high": min(expected + half, top),
            "level": level, "test_sampling_sd": float(boots.std(ddof=1)), "fold_sd": fold_sd, "n_test": n,
            "n_oof": len(y), "basis": basis, "pseudo_labelled": list(b.pseudo_labelled)}
