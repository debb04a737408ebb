"""Blending models: weights fitted on out-of-fold predictions, and the blend applied to the test set.

Predictions are probability arrays [N, C] (rows sum to 1), one per model, all in the same row order
as the labels y [N]. A blend is a weighted mean of the probabilities (``space="prob"``) or of the
log-probabilities followed by a softmax (``space="logit"``, a geometric mean). Weights are
non-negative and sum to 1.

    b = fit_blend(oofs, classes, metric="log_loss")   # weights + temperature fitted on OOF
    ids, probs = blend_test(b, tests, classes)        # the test predictions blended the same way
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax

from lib.core.metrics import apply_temperature, check_probs, get_metric, probs_to_logits, score
from lib.predict.decision import apply_offsets

SPACES = ("prob", "logit")

def _check_preds(preds, y=None) -> list[np.ndarray]:
    if isinstance(preds, dict):
        raise TypeError("pass a list of arrays (e.g. list(oofs.values())), not a dict")
    if len(preds) == 0:
        raise ValueError("need at least one prediction array [N, C]")
    arrs = [np.asarray(p, dtype=np.float64) for p in preds]
    for i, a in enumerate(arrs):
        if a.ndim != 2 or a.shape != arrs[0].shape:
            raise ValueError(f"prediction {i} has shape {a.shape}; every prediction must be "
                             f"[N, C] with the shape of the first one, {arrs[0].shape}")
        if y is not None:
            check_probs(y, a)
    return arrs

def blend(preds, weights, space: str = "prob") -> np.ndarray:
    """Blend M probability arrays [N, C] into one [N, C].

    ``weights`` [M] must be >= 0 and are divided by their sum. ``space="prob"``: weighted mean of
    probabilities; ``space="logit"``: softmax of the weighted mean of log(clip(p, 1e-15)).
    """
    arrs = _check_preds(preds)
    w = np.asarray(weights, dtype=np.float64).ravel()
    if len(w) != len(arrs):
        raise ValueError(f"got {len(w)} weights for {len(arrs)} predictions")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {w}")
    w = w / w.sum()
    if space == "prob":
        return sum(wi * a for wi, a in zip(w, arrs))
    if space == "logit":
        return softmax(sum(wi * probs_to_logits(a) for wi, a in zip(w, arrs)), axis=1)
    raise ValueError(f"space must be one of {SPACES}, got {space!r}")

def _log_loss_objective(arrs, y, space: str, eps: float = 1e-15):
    """(w -> (loss, gradient)) of the blend's log loss; convex in w on the simplex."""
    rows = np.arange(len(y))
    if space == "prob":
        # with weights summing to 1 the blend's rows sum to 1, so only the true-class column counts
        q = np.stack([np.clip(a[rows, y], eps, 1 - eps) for a in arrs], axis=1)  # [N, M]

        def f(w):
            b = np.maximum(q @ w, eps)
            return -np.mean(np.log(b)), -(q / b[:, None]).mean(axis=0)
        return f
    logs = [probs_to_logits(a, eps) for a in arrs]  # M x [N, C]
    true = np.stack([lg[rows, y] for lg in logs], axis=1)  # [N, M]

    def f(w):
        z = sum(wi * lg for wi, lg in zip(w, logs))
        lse = logsumexp(z, axis=1)
        s = np.exp(z - lse[:, None])
        grad = np.array([(s * lg).sum(axis=1).mean() for lg in logs]) - true.mean(axis=0)
        return float(np.mean(lse - z[rows, y])), grad
    return f

def _fit_smooth(f, m: int, starts) -> list[np.ndarray]:
    """SLSQP on the simplex (w >= 0, sum w = 1) from each start; returns the end points."""
    cons = [{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}]
    out = []
    for w0 in starts:
        res = minimize(f, w0, jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * m,
                       constraints=cons, options={"maxiter": 200, "ftol": 1e-10})
        out.append(res.x)
    return out

def _fit_greedy(arrs, y, metric: str, space: str, n_steps: int) -> np.ndarray:
    """Forward selection with replacement (Caruana et al., 2004): start from the best single model,
    repeatedly add the model whose addition scores best; weights = selection counts / total.
    Keeps the best state seen over ``n_steps`` additions."""
    fn, greater = get_metric(metric)
    sign = 1.0 if greater else -1.0
    parts = [probs_to_logits(a) for a in arrs] if space == "logit" else arrs

    def value(total, k):
        p = softmax(total / k, axis=1) if space == "logit" else total / k
        return sign * fn(y, p)

    singles = [value(p, 1) for p in parts]
    counts = np.zeros(len(arrs))
    counts[int(np.argmax(singles))] = 1
    total = parts[int(np.argmax(singles))].copy()
    best_val, best_counts = max(singles), counts.copy()
    for step in range(2, n_steps + 1):
        vals = [value(total + p, step) for p in parts]
        j = int(np.argmax(vals))
        total += parts[j]
        counts[j] += 1
        if vals[j] > best_val:
            best_val, best_counts = vals[j], counts.copy()
    return best_counts / best_counts.sum()

def fit_blend_weights(oofs, y, metric: str = "log_loss", space: str = "prob",
                      n_steps: int = 50, compare: bool = True) -> np.ndarray:
    """Non-negative weights [M] summing to 1 that optimise ``metric`` of ``blend(oofs, w, space)``.

    oofs: list of M OOF probability arrays [N, C]; y [N]. ``log_loss`` (smooth and convex in w) is
    minimised with SLSQP on the simplex, with an analytic gradient, from equal weights and from each
    one-hot start. Non-differentiable metrics (accuracy, f1_macro, top5) use derivative-free greedy
    forward selection with replacement over ``n_steps`` additions (weights are multiples of
    1/n_steps). With ``compare`` the result is scored with the real metric against equal weights and
    every single model and the best is returned, so it is never worse than either on these rows
    (which says nothing about new rows: ``lib.predict.crossfit`` compares them on held-out folds).
    """
    arrs = _check_preds(oofs, y)
    y = np.asarray(y).astype(np.int64)
    fn, greater = get_metric(metric)
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    m = len(arrs)
    eye = list(np.eye(m))
    equal = np.full(m, 1.0 / m)
    if m == 1:
        return np.ones(1)
    if metric == "log_loss":
        fitted = _fit_smooth(_log_loss_objective(arrs, y, space), m, [equal] + eye)
    else:
        fitted = [_fit_greedy(arrs, y, metric, space, n_steps)]
    best_w, best_s = None, None
    for w in fitted + ([equal] + eye if compare else []):  # fitted first: they win ties
        w = np.clip(w, 0.0, None)
        w = w / w.sum()
        s = fn(y, blend(arrs, w, space))
        if best_s is None or (s > best_s if greater else s < best_s):
            best_w, best_s = w, s
    return best_w

def blend_report(oofs: dict, y, weights, metric: str = "log_loss",
                 space: str = "prob") -> pd.DataFrame:
    """One row per single model, the equal-weight blend and the fitted blend (``weights``).

    Columns: model, weights (readable "name=w" list), log_loss, accuracy, f1_macro (plus ``metric``
    when it is another one, e.g. top5).
    """
    names = list(oofs)
    arrs = _check_preds(list(oofs.values()), y)
    w = np.asarray(weights, dtype=np.float64).ravel()
    if len(w) != len(names):
        raise ValueError(f"got {len(w)} weights for {len(names)} models {names}")
    cols = ["log_loss", "accuracy", "f1_macro"]
    get_metric(metric)
    if metric not in cols:
        cols.append(metric)

    def fmt(ws):
        return ", ".join(f"{n}={v:.3g}" for n, v in zip(names, ws) if v > 0)

    rows = [(n, f"{n}=1", a) for n, a in zip(names, arrs)]
    equal = np.full(len(names), 1.0 / len(names))
    rows.append(("equal_blend", fmt(equal), blend(arrs, equal, space)))
    rows.append(("fitted_blend", fmt(w / w.sum()), blend(arrs, w, space)))
    return pd.DataFrame([{"model": n, "weights": ws, **{c: score(c, y, p) for c in cols}}
                         for n, ws, p in rows])


@dataclass
class Blend:
    """Blend fitted on OOF: model names, weights [M] (sum 1), temperature T, space, the decision
    layer's per-class ``offsets`` [C] (None: plain argmax), the ``strategy`` the cross-fitted
    comparison chose (``lib.predict.crossfit``), the shared ids [N], their targets y [N] and folds [N], the
    blended OOF probabilities [N, C] before (``uncalibrated``) and after T and offsets (``probs``),
    in-sample; ``cross_probs`` [N, C]: the same pipeline cross-fitted (each fold's rows by what was
    fitted on the others: what a new row can expect); ``report`` (in-sample), ``crossfit`` and
    ``decision`` (cross-fitted beside in-sample) tables; ``test_temperature``: the temperature the
    test predictions get (``lib.predict.calibrate.calibrate_test``; None: ``temperature``); ``metric``: what
    the blend was chosen by (the competition's), ``metric_source``: where that came from
    (``lib.predict.crossfit.competition_metric``); ``temperature_fitted``: whether T was fitted on OOF
    (False: off, T = 1; a fitted T may be 1.0 too); ``pseudo_labelled``: the blend's runs that trained on
    pseudo-labelled test images (``calibrate_test`` finds them), whose test predictions no OOF number
    describes."""
    models: list
    weights: np.ndarray
    temperature: float
    space: str
    ids: list
    y: np.ndarray
    uncalibrated: np.ndarray
    probs: np.ndarray
    report: pd.DataFrame
    offsets: np.ndarray | None = None
    strategy: str = "fitted"
    folds: np.ndarray | None = None
    cross_probs: np.ndarray | None = None
    crossfit: pd.DataFrame | None = None
    decision: pd.DataFrame | None = None
    test_temperature: float | None = None
    metric: str = "log_loss"
    metric_source: str = "given"
    temperature_fitted: bool = True
    pseudo_labelled: tuple = ()


def blend_test(b: Blend, tests: dict, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(ids [N], probs [N, C]): the models' test predictions blended with ``b``'s weights, test
    temperature and offsets."""
    T = b.temperature if b.test_temperature is None else b.test_temperature
    return blend_tests(tests, b.models, b.weights, b.space, T, classes, b.offsets)


def blend_tests(tests: dict, models: list[str], weights, space: str, temperature: float,
                classes: list[str], offsets=None) -> tuple[np.ndarray, np.ndarray]:
    """(ids [N], probs [N, C]): ``tests`` (model -> id + classes) blended with ``weights`` [M] in
    ``space``, then temperature-scaled (and shifted by the decision layer's ``offsets`` [C] when
    given); rows in the first model's id order."""
    missing = [m for m in models if m not in tests]
    if missing:
        raise ValueError(f"no test predictions for models {missing}")
    ids = tests[models[0]]["id"]
    arrs = []
    for m in models:
        t = tests[m]
        if set(t["id"]) != set(ids) or len(t) != len(ids):
            raise ValueError(f"model {m} predicts other test ids than {models[0]}")
        arrs.append(t.set_index("id").loc[ids, classes].to_numpy(np.float64))
    probs = apply_temperature(probs_to_logits(blend(arrs, weights, space)), temperature)
    return ids.to_numpy(), apply_offsets(probs, offsets) if offsets is not None else probs
