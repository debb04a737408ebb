"""A decision layer for label metrics: per-class offsets on the log-probabilities before the argmax.

A model's argmax maximises expected accuracy only when its probabilities are right; for macro F1 (and
for accuracy under a class prior that shifted, or a miscalibrated blend) moving the boundary between
classes gains. ``fit_offsets`` finds offsets b [C] (nats) such that ``argmax(log p + b)`` scores best
on the rows given; ``apply_offsets`` returns ``softmax(log p + b)``, whose argmax is that decision.

Fitted on OOF rows, the offsets see those labels: ``lib.predict.crossfit`` fits them on K-1 folds, scores the
held-out fold, and uses them only when that cross-fitted score gains.

    b = fit_offsets(oof_probs, y, "f1_macro")      # [C], 0 for a class whose boundary did not move
    labels = apply_offsets(test_probs, b).argmax(1)
"""
from __future__ import annotations

import numpy as np
from scipy.special import softmax

from lib.core.metrics import probs_to_logits

DECISION_METRICS = ("accuracy", "f1_macro")
GRID = np.round(np.linspace(-3.0, 3.0, 61), 3)  # offsets tried per class, in nats


def _scorer(metric: str, y: np.ndarray, num_classes: int):
    """pred [G, N] -> score [G] of ``metric`` (macro F1 over the classes in y or in pred, as
    ``lib.core.metrics.f1_macro``)."""
    if metric == "accuracy":
        return lambda pred: (pred == y).mean(axis=1)
    if metric != "f1_macro":
        raise ValueError(f"a decision layer fits {DECISION_METRICS}, not {metric!r}")
    in_y = np.bincount(y, minlength=num_classes)

    def f1(pred):
        g = pred.shape[0]
        flat = pred + num_classes * np.arange(g)[:, None]
        n_pred = np.bincount(flat.ravel(), minlength=g * num_classes).reshape(g, num_classes)
        hit = np.where(pred == y, flat, -1).ravel()
        tp = np.bincount(hit[hit >= 0], minlength=g * num_classes).reshape(g, num_classes)
        denom = n_pred + in_y
        present = denom > 0
        return np.where(present, 2 * tp / np.maximum(denom, 1), 0).sum(axis=1) / present.sum(axis=1)
    return f1


def fit_offsets(probs, y, metric: str = "f1_macro", rounds: int = 2, grid=GRID) -> np.ndarray:
    """Per-class offsets b [C] (nats) maximising ``metric`` of ``argmax(log probs + b)`` on these rows.

    probs [N, C] (rows sum to 1), y [N]. Coordinate ascent: each class's offset in turn is set to the
    grid value that scores best with the others fixed (ties keep the current value, so a class moves
    only when it gains), ``rounds`` passes over the classes. Offsets are centred (mean 0).
    """
    z = probs_to_logits(probs)
    y = np.asarray(y, dtype=np.int64)
    n, c = z.shape
    score = _scorer(metric, y, c)
    b = np.zeros(c)
    grid = np.asarray(grid, dtype=np.float64)
    best = float(score(z.argmax(axis=1)[None])[0])
    for _ in range(rounds):
        moved = False
        for k in range(c):
            adj = z + b
            adj[:, k] = -np.inf
            other = adj.argmax(axis=1)  # the decision when class k is out of the running
            margin = adj[np.arange(n), other] - z[:, k]  # class k wins where b_k > margin
            pred = np.where(grid[:, None] > margin[None, :], k, other[None, :])
            scores = score(pred)
            j = int(np.argmax(scores))
            if scores[j] > best + 1e-12:
                best, b[k], moved = float(scores[j]), grid[j], True
        if not moved:
            break
    return b - b.mean()


def apply_offsets(probs, offsets) -> np.ndarray:
    """softmax(log probs + offsets): probs [N, C], offsets [C] -> probs [N, C]."""
    b = np.asarray(offsets, dtype=np.float64).ravel()
    z = probs_to_logits(probs)
    if z.shape[1] != len(b):
        raise ValueError(f"{len(b)} offsets for {z.shape[1]} classes")
    return softmax(z + b, axis=1)
