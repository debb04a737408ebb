"""Blend weights fitted on out-of-fold predictions, and submission writing with validation.

Predictions are probability arrays [N, C] (rows sum to 1), one per model, all in the same row order
as the labels y [N]. A blend is a weighted mean of the probabilities (``space="prob"``) or of the
log-probabilities followed by a softmax (``space="logit"``, a geometric mean). Weights are
non-negative and sum to 1.

A submission is a DataFrame shaped like the competition's sample submission: the ID column first
(whatever its name), then one probability column per class, in the sample's order.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax

from lib.io import write_csv
from lib.metrics import _check, get_metric, probs_to_logits, score

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
            _check(y, a)
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
                      n_steps: int = 50) -> np.ndarray:
    """Non-negative weights [M] summing to 1 that optimise ``metric`` of ``blend(oofs, w, space)``.

    oofs: list of M OOF probability arrays [N, C]; y [N]. ``log_loss`` (smooth and convex in w) is
    minimised with SLSQP on the simplex, with an analytic gradient, from equal weights and from each
    one-hot start. Non-differentiable metrics (accuracy, f1_macro, top5) use derivative-free greedy
    forward selection with replacement over ``n_steps`` additions (weights are multiples of
    1/n_steps). The result is scored with the real metric against equal weights and every single
    model and the best is returned, so it is never worse than either on the OOF rows.
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
    for w in fitted + [equal] + eye:  # fitted first: they win ties
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


# ---------------------------------------------------------------- submissions

def _few(values, n: int = 5) -> str:
    values = list(values)
    more = f" ... (+{len(values) - n} more)" if len(values) > n else ""
    return ", ".join(repr(v) for v in values[:n]) + more


def validate_submission(sub: pd.DataFrame, sample: pd.DataFrame, atol: float = 1e-6) -> None:
    """Raise ValueError naming every problem of ``sub`` against the sample submission; None if fine.

    Checks: columns (missing, extra, order), IDs in the first column (duplicates, missing, unknown,
    row order), probability values (non-numeric, NaN/inf, < 0 or > 1, row sums off 1 by > atol).
    """
    problems = []
    id_col, cls_cols = sample.columns[0], list(sample.columns[1:])
    missing_c = [c for c in sample.columns if c not in sub.columns]
    extra_c = [c for c in sub.columns if c not in sample.columns]
    if missing_c:
        problems.append(f"missing columns: {_few(missing_c)}")
    if extra_c:
        problems.append(f"extra columns not in the sample: {_few(extra_c)}")
    if not missing_c and not extra_c and list(sub.columns) != list(sample.columns):
        first = next(i for i, (a, b) in enumerate(zip(sub.columns, sample.columns)) if a != b)
        problems.append(f"columns reordered: position {first} is {sub.columns[first]!r}, the "
                        f"sample has {sample.columns[first]!r} (reorder with sub[sample.columns])")
    if id_col in sub.columns:
        ids, want = sub[id_col], sample[id_col]
        dup = ids[ids.duplicated()].unique()
        if len(dup):
            problems.append(f"duplicate IDs in {id_col!r} ({len(dup)}): {_few(dup)}")
        have, need = set(ids), set(want)
        missing = [v for v in want if v not in have]
        extra = [v for v in ids.unique() if v not in need]
        if missing:
            problems.append(f"missing IDs ({len(missing)} of {len(want)}): {_few(missing)}")
        if extra:
            problems.append(f"unknown IDs not in the sample ({len(extra)}): {_few(extra)}")
        if (missing or extra) and set(ids.astype(str)) == set(want.astype(str)):
            problems.append(f"the IDs match only as text: {id_col!r} is {ids.dtype} in the "
                            f"submission and {want.dtype} in the sample; cast them alike")
        if not (missing or extra or len(dup)) and len(ids) == len(want) \
                and not np.array_equal(ids.to_numpy(), want.to_numpy()):
            first = int(np.argmax(ids.to_numpy() != want.to_numpy()))
            problems.append(f"row order differs from the sample: row {first} has ID "
                            f"{ids.iloc[first]!r}, the sample has {want.iloc[first]!r}")
    def row(r: int) -> str:
        return f"row {r}" + (f" (ID {sub[id_col].iloc[r]!r})" if id_col in sub.columns else "")

    present = [c for c in cls_cols if c in sub.columns]
    non_num = [c for c in present if not pd.api.types.is_numeric_dtype(sub[c])]
    if non_num:
        problems.append(f"non-numeric probability columns: {_few(non_num)}")
    present = [c for c in present if c not in non_num]
    if present:
        v = sub[present].to_numpy(dtype=np.float64)
        bad = ~np.isfinite(v)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            problems.append(f"{int(bad.sum())} NaN/inf values, first at {row(int(r))} "
                            f"column {present[c]!r}")
        vf = np.where(bad, 0.5, v)
        out = (vf < 0) | (vf > 1)
        if out.any():
            problems.append(f"{int(out.sum())} values outside [0, 1] (min {vf.min():.6g}, "
                            f"max {vf.max():.6g})")
        if len(present) == len(cls_cols) and not bad.any():
            off = np.abs(v.sum(axis=1) - 1.0)
            n_off = int((off > atol).sum())
            if n_off:
                r = int(off.argmax())
                problems.append(f"{n_off} rows do not sum to 1 (atol={atol}); worst is {row(r)} "
                                f"summing to {v[r].sum():.8g}")
    if problems:
        raise ValueError("submission does not match the sample submission:\n  - "
                         + "\n  - ".join(problems))


def make_submission(probs, ids, sample: pd.DataFrame, clip_eps: float = 1e-15) -> pd.DataFrame:
    """Submission DataFrame from probs [N, C] whose rows belong to ``ids`` [N] (any order).

    Rows follow the sample's ID order (every sample ID must be in ``ids``, and no other), columns
    follow the sample, probabilities are clipped to [clip_eps, 1-clip_eps] and renormalised like the
    metric. The result is checked with ``validate_submission``.
    """
    id_col, cls_cols = sample.columns[0], list(sample.columns[1:])
    p = np.asarray(probs, dtype=np.float64)
    ids = pd.Index(np.asarray(ids))
    if p.ndim != 2 or p.shape[1] != len(cls_cols):
        raise ValueError(f"probs has shape {p.shape}; the sample has {len(cls_cols)} class columns "
                         f"after {id_col!r}, so probs must be [N, {len(cls_cols)}]")
    if len(ids) != len(p):
        raise ValueError(f"got {len(ids)} ids for {len(p)} rows of probs")
    if ids.has_duplicates:
        raise ValueError(f"duplicate ids: {_few(ids[ids.duplicated()].unique())}")
    want = sample[id_col]
    missing = [v for v in want if v not in ids]
    extra = ids.difference(pd.Index(want))
    if missing or len(extra):
        raise ValueError(f"ids do not match the sample's {id_col!r}: {len(missing)} missing "
                         f"({_few(missing)}), {len(extra)} unknown ({_few(extra)})")
    p = np.clip(p[ids.get_indexer(want)], clip_eps, 1 - clip_eps)
    p = p / p.sum(axis=1, keepdims=True)
    sub = pd.DataFrame(p, columns=cls_cols)
    sub.insert(0, id_col, want.to_numpy())
    validate_submission(sub, sample)
    return sub


def write_submission(df: pd.DataFrame, path, sample: pd.DataFrame):
    """Validate ``df`` against the sample, then write it as CSV atomically; returns the Path."""
    validate_submission(df, sample)
    return write_csv(path, df)

