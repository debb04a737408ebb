"""Competition metrics on class probabilities, calibration error and temperature scaling.

Conventions used by every function here:
    probs   float array [N, C], rows sum to 1. C is the competition's full class count, never
            inferred from ``y``: a fold or a small validation split may lack some classes.
    y       int array [N] of class indices 0..C-1.

``log_loss`` is the Kaggle formula (clip to [eps, 1-eps], renormalise rows, mean of -log p[true])
and always scores all C columns, which is what ``sklearn.metrics.log_loss`` does only when given
``labels=range(C)`` (without it a fold that lacks classes fails with "N classes in y_true, C in
y_score").

Pick a metric by name with ``score(name, y, probs)``; ``METRICS`` maps each name to
``(function, greater_is_better)``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import softmax
from sklearn.metrics import f1_score

from lib.core.choices import direction


def _check_labels(y, n: int | None, num_classes: int | None, what: str = "y") -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array of class indices [N], got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ValueError(f"{what} must hold integer class indices 0..C-1, got dtype {y.dtype}")
        y = y.astype(np.int64)
    if n is not None and len(y) != n:
        raise ValueError(f"{what} has {len(y)} labels but probs has {n} rows; they must match")
    if y.size:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0:
            raise ValueError(f"{what} holds label {lo}: class indices must be >= 0")
        if num_classes is not None and hi >= num_classes:
            raise ValueError(f"{what} holds label {hi} but there are only C={num_classes} classes "
                             f"(valid labels 0..{num_classes - 1}); check the class list and the "
                             f"probs columns")
    return y.astype(np.int64, copy=False)


def check_probs(y, probs) -> tuple[np.ndarray, np.ndarray]:
    """Validate (y [N], probs [N, C]) and return them as (int64, float64) arrays."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be a 2-D array [N, C], got shape {probs.shape}")
    if not np.all(np.isfinite(probs)):
        raise ValueError(f"probs holds {int((~np.isfinite(probs)).sum())} NaN/inf values")
    y = _check_labels(y, probs.shape[0], probs.shape[1])
    return y, probs


def log_loss(y, probs, eps: float = 1e-15) -> float:
    """Multi-class log loss in nats: clip probs [N, C] to [eps, 1-eps], renormalise each row,
    return the mean of -log p[i, y_i] over all C columns (classes absent from y included)."""
    y, p = check_probs(y, probs)
    p = np.clip(p, eps, 1 - eps)
    p = p / p.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))


def accuracy(y, probs) -> float:
    """Fraction of rows whose argmax over probs [N, C] equals y."""
    y, p = check_probs(y, probs)
    return float(np.mean(p.argmax(axis=1) == y))


def top_k(y, probs, k: int = 5) -> float:
    """Fraction of rows whose true class is among the k highest of probs [N, C] (1.0 if k >= C)."""
    y, p = check_probs(y, probs)
    if k < 1:
        raise ValueError(f"top_k needs k >= 1, got k={k}")
    if k >= p.shape[1]:
        return 1.0
    top = np.argpartition(-p, k - 1, axis=1)[:, :k]
    return float(np.mean((top == y[:, None]).any(axis=1)))


def f1_macro(y, probs_or_pred, num_classes: int | None = None) -> float:
    """Macro F1 over the classes present in y or in the predictions (scikit-learn's
    ``f1_score(average='macro')``). ``probs_or_pred`` is probs [N, C] (argmax is taken) or
    predicted class indices [N]; ``num_classes`` checks label range (defaults to C of probs)."""
    pp = np.asarray(probs_or_pred)
    if pp.ndim == 2:
        if num_classes is not None and num_classes != pp.shape[1]:
            raise ValueError(f"num_classes={num_classes} but probs has {pp.shape[1]} columns")
        y, p = check_probs(y, pp)
        pred = p.argmax(axis=1)
    else:
        pred = _check_labels(pp, None, num_classes, what="predictions")
        y = _check_labels(y, len(pred), num_classes)
    labels = np.union1d(y, pred)
    return float(f1_score(y, pred, labels=labels, average="macro", zero_division=0))


def reliability_bins(y, probs, n_bins: int = 15) -> pd.DataFrame:
    """Top-1 confidence split into ``n_bins`` equal-width bins over [0, 1] (right-closed).

    Returns one row per bin: bin (index), bin_lower, bin_upper, confidence (mean top-1 prob in
    the bin), accuracy (fraction correct in the bin), count (rows in the bin; empty bins have NaN
    confidence and accuracy).
    """
    y, p = check_probs(y, probs)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        mean_acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return pd.DataFrame({"bin": np.arange(n_bins), "bin_lower": edges[:-1], "bin_upper": edges[1:],
                         "confidence": mean_conf, "accuracy": mean_acc, "count": count})


def ece(y, probs, n_bins: int = 15) -> float:
    """Expected calibration error of the top-1 confidence: sum over bins of
    (count / N) * |accuracy - confidence|, in probability units (0 = perfectly calibrated)."""
    bins = reliability_bins(y, probs, n_bins)
    full = bins[bins["count"] > 0]
    if full.empty:
        return 0.0
    gap = (full["accuracy"] - full["confidence"]).abs()
    return float((gap * full["count"]).sum() / full["count"].sum())


def _top5(y, probs) -> float:
    return top_k(y, probs, k=5)


# name -> (function(y, probs) -> float, greater_is_better)
METRICS = {"log_loss": log_loss, "accuracy": accuracy, "f1_macro": f1_macro, "top5": _top5}
TEMPERATURE_BOUNDS = (0.05, 20.0)  # the temperatures fit_temperature searches


def scores(y, probs) -> dict:
    """{log_loss, accuracy, f1_macro} of probs [N, C] against y [N]: the three every table reports."""
    return {"log_loss": log_loss(y, probs), "accuracy": accuracy(y, probs), "f1_macro": f1_macro(y, probs)}


def get_metric(name: str):
    """(function, greater_is_better) for a metric name from ``METRICS``."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; choose one of {sorted(METRICS)}")
    return METRICS[name], direction(name) > 0


def score(name: str, y, probs) -> float:
    """Score probs [N, C] against y [N] with the metric called ``name`` (see ``METRICS``)."""
    return get_metric(name)[0](y, probs)


# ---------------------------------------------------------------- temperature scaling

def probs_to_logits(probs, eps: float = 1e-15) -> np.ndarray:
    """log(clip(probs, eps, 1-eps)) [N, C]: logits whose softmax is the metric's clipped and
    renormalised probabilities, so temperature scaling can also be fitted on saved probabilities."""
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps))


def apply_temperature(logits, T: float) -> np.ndarray:
    """softmax(logits / T) over the class axis: logits [N, C] -> probs [N, C]. T > 0."""
    if not (np.isfinite(T) and T > 0):
        raise ValueError(f"temperature T must be a finite number > 0, got {T}")
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2:
        raise ValueError(f"logits must be a 2-D array [N, C], got shape {logits.shape}")
    return softmax(logits / T, axis=1)


def fit_temperature(logits, y, bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """The temperature T in ``bounds`` minimising log_loss(y, softmax(logits / T)).

    logits [N, C] (for saved probabilities pass ``probs_to_logits(probs)``), y [N]. Bounded Brent
    search on log T. Returns 1.0 when the fitted T does not lower the log loss of T = 1, so applying
    the result never makes OOF log loss worse.
    """
    logits = np.asarray(logits, dtype=np.float64)
    y, logits = check_probs(y, logits)
    lo, hi = bounds
    if not (0 < lo < 1 < hi):
        raise ValueError(f"bounds must satisfy 0 < low < 1 < high, got {bounds}")

    def loss(log_t: float) -> float:
        return log_loss(y, apply_temperature(logits, float(np.exp(log_t))))

    res = minimize_scalar(loss, bounds=(np.log(lo), np.log(hi)), method="bounded",
                          options={"xatol": 1e-4})
    T = float(np.exp(res.x))
    return T if loss(np.log(T)) < loss(0.0) else 1.0
