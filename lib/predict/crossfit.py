"""Cross-fitted choices: every fold's OOF rows are scored by what was fitted on the other folds.

Blend weights, the temperature and a decision layer fitted on OOF rows and scored on the same rows
look better than they are: the fitted blend can never lose to equal weights there. Here each choice
is a *strategy* (how to get weights from OOF) followed by the temperature (and, for accuracy /
macro F1, per-class offsets, ``lib.predict.decision``); for each fold k the strategy is fitted on the other
folds' rows and applied to fold k's rows. The concatenated held-out predictions ("cross-fitted")
score what the submission can expect; the strategy with the best cross-fitted score is the one used,
refitted on all rows.

    cf = crossfit_blend(arrs, y, folds, metric="log_loss")
    cf.table        # strategy, weights, in-sample and cross-fitted scores, fold spread, chosen
    cf.chosen, cf.weights, cf.temperature, cf.offsets

The metric all of it is chosen by is the competition's, one setting: ``fit_blend(..., metric=None,
runs=runs)`` takes the ``monitor`` the runs picked their epochs by when they agree
(``competition_metric``), so a macro-F1 recipe gets weights, offsets and an expected score for macro F1.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lib.core.metrics import METRICS, apply_temperature, fit_temperature, get_metric, probs_to_logits, score
from lib.core.rundir import recorded_config
from lib.predict.blend import Blend, blend, blend_report, fit_blend_weights
from lib.predict.decision import DECISION_METRICS, apply_offsets, fit_offsets
from lib.predict.oof import common_ids

STRATEGIES = ("equal", "best_single", "fitted")  # in this order of preference on ties: simplest first
DECISION_SURE = 0.9  # offsets are used when they win in this share of paired bootstrap resamples of the OOF rows


def competition_metric(runs: pd.DataFrame | None = None, metric: str | None = None) -> tuple[str, str]:
    """(metric, where it came from): what the competition is scored by, which the blend weights, the
    decision layer and the expected score use. ``metric`` when given; else the ``monitor`` the ``runs``
    (``open_runs``' table: metrics.json, else params.yaml) picked their epochs by, when they all agree
    (``valid_loss``, their loss on the validation fold, counts as ``log_loss``); runs that disagree are
    an error naming them; log_loss when no run says."""
    named = {}
    for r in runs.itertuples() if runs is not None else []:
        m = getattr(r, "monitor", None)
        m = m if isinstance(m, str) else (recorded_config(r.dir) or {}).get("monitor")
        if m:
            named.setdefault("log_loss" if m == "valid_loss" else m, []).append(r.run_name)
    said = ", ".join(f"{m} ({', '.join(rs[:3])}{', ...' if len(rs) > 3 else ''})" for m, rs in named.items())
    if metric is not None:
        get_metric(metric)
        return metric, "given" + (f"; the runs monitor {said}" if set(named) - {metric} else "")
    if len(named) > 1:
        raise ValueError(f"the runs picked their epochs by different metrics: {said}; say which one the "
                         f"competition is scored by (04's blend_metric, one of {sorted(METRICS)})")
    if named:
        m, rs = next(iter(named.items()))
        return m, f"the monitor of all {len(rs)} runs"
    return "log_loss", "no run recorded a monitor: log_loss"


def strategy_weights(strategy: str, arrs: list[np.ndarray], y, metric: str, space: str) -> np.ndarray:
    """Weights [M] (>= 0, sum 1) of ``strategy`` fitted on these rows: ``equal``; ``best_single`` (the
    one model scoring best on ``metric``); ``fitted`` (``fit_blend_weights``' optimum, uncompared)."""
    m = len(arrs)
    if strategy == "equal":
        return np.full(m, 1.0 / m)
    if strategy == "best_single":
        fn, greater = get_metric(metric)
        s = np.array([fn(y, a) for a in arrs]) * (1 if greater else -1)
        return np.eye(m)[int(np.argmax(s))]
    if strategy == "fitted":
        return fit_blend_weights(arrs, y, metric, space, compare=False)
    raise ValueError(f"strategy {strategy!r}: choose one of {STRATEGIES}")


@dataclass
class Pipeline:
    """What one strategy fitted on some rows: weights [M], temperature T, offsets [C] or None."""
    weights: np.ndarray
    temperature: float
    offsets: np.ndarray | None

    def apply(self, arrs: list[np.ndarray], space: str) -> np.ndarray:
        p = apply_temperature(probs_to_logits(blend(arrs, self.weights, space)), self.temperature)
        return apply_offsets(p, self.offsets) if self.offsets is not None else p


def fit_pipeline(strategy: str, arrs, y, metric: str, space: str, temperature: bool,
                 decide: bool) -> Pipeline:
    w = strategy_weights(strategy, arrs, y, metric, space)
    raw = blend(arrs, w, space)
    T = fit_temperature(probs_to_logits(raw), y) if temperature else 1.0
    offsets = None
    if decide and metric in DECISION_METRICS:
        offsets = fit_offsets(apply_temperature(probs_to_logits(raw), T), y, metric)
    return Pipeline(w, T, offsets)


def cross_predict(strategy: str, arrs, y, folds, metric: str, space: str, temperature: bool,
                  decide: bool) -> np.ndarray:
    """[N, C]: each fold's rows predicted by ``strategy`` fitted on the other folds' rows."""
    out = np.zeros_like(arrs[0])
    for k in np.unique(folds):
        held = folds == k
        p = fit_pipeline(strategy, [a[~held] for a in arrs], y[~held], metric, space, temperature, decide)
        out[held] = p.apply([a[held] for a in arrs], space)
    return out


@dataclass
class CrossFit:
    """The cross-fitted comparison (``table``) and the chosen strategy refitted on all rows:
    ``weights`` [M], ``temperature``, ``offsets`` [C] or None (decision layer not used), and
    ``probs`` [N, C]: the chosen pipeline's cross-fitted OOF predictions (what the expected score
    and its uncertainty are computed from)."""
    table: pd.DataFrame
    chosen: str
    weights: np.ndarray
    temperature: float
    offsets: np.ndarray | None
    probs: np.ndarray
    decision: pd.DataFrame | None


def crossfit_blend(arrs: list[np.ndarray], y, folds, metric: str = "log_loss", space: str = "prob",
                   temperature: bool = True, decide: bool = True, names=None) -> CrossFit:
    """Compare the strategies cross-fitted over ``folds`` [N] (each row's fold) and pick the best.

    arrs: M OOF probability arrays [N, C]; y [N]. Every strategy is scored in-sample (fitted and scored
    on all rows) and cross-fitted; the chosen one has the best cross-fitted ``metric`` (ties: the
    simpler, in ``STRATEGIES`` order). With ``decide`` and a label metric (accuracy, f1_macro), the
    decision layer is compared the same way and kept only when its cross-fitted score gains in at
    least ``DECISION_SURE`` of paired bootstrap resamples (it moves the decisions of few rows, so a
    gain by chance is common; ``win_rate`` in the decision table).
    """
    y = np.asarray(y, dtype=np.int64)
    folds = np.asarray(folds)
    if len(np.unique(folds)) < 2:
        raise ValueError("cross-fitting needs OOF rows from at least 2 folds")
    names = list(names) if names is not None else [f"model{i}" for i in range(len(arrs))]
    fn, greater = get_metric(metric)
    strategies = STRATEGIES if len(arrs) > 1 else ("equal",)
    rows, cross, full = [], {}, {}
    for s in strategies:
        full[s] = fit_pipeline(s, arrs, y, metric, space, temperature, decide=False)
        cross[s] = cross_predict(s, arrs, y, folds, metric, space, temperature, decide=False)
        per_fold = [fn(y[folds == k], cross[s][folds == k]) for k in np.unique(folds)]
        rows.append({"strategy": s, "weights": _fmt(names, full[s].weights), "T": round(full[s].temperature, 4),
                     f"in_sample_{metric}": fn(y, full[s].apply(arrs, space)),
                     f"cross_fitted_{metric}": fn(y, cross[s]), "fold_sd": float(np.std(per_fold, ddof=1))})
    table = pd.DataFrame(rows)
    col = table[f"cross_fitted_{metric}"].to_numpy() * (1 if greater else -1)
    chosen = str(table["strategy"].iloc[int(np.flatnonzero(col >= col.max() - 1e-12)[0])])
    table["chosen"] = table["strategy"] == chosen
    final = full[chosen]
    probs, decision = cross[chosen], None
    if decide and metric in DECISION_METRICS:
        with_offsets = cross_predict(chosen, arrs, y, folds, metric, space, temperature, decide=True)
        before, after = fn(y, probs), fn(y, with_offsets)
        sure = paired_win_rate(y, probs, with_offsets, metric)
        used = after > before + 1e-12 and sure >= DECISION_SURE
        decision = pd.DataFrame([{"decision": "argmax", f"cross_fitted_{metric}": before, "win_rate": 1 - sure,
                                  "used": not used},
                                 {"decision": "per-class offsets", f"cross_fitted_{metric}": after, "win_rate": sure,
                                  "used": used}])
        if used:
            final = fit_pipeline(chosen, arrs, y, metric, space, temperature, decide=True)
            probs = with_offsets
    return CrossFit(table, chosen, final.weights, final.temperature, final.offsets, probs, decision)


def paired_win_rate(y, a, b, metric: str, n_boot: int = 200, seed: int = 0) -> float:
    """Share of ``n_boot`` bootstrap resamples of the rows (the same rows for both) in which
    predictions b [N, C] score better than a [N, C] on ``metric``."""
    fn, greater = get_metric(metric)
    rng = np.random.default_rng(seed)
    sign = 1 if greater else -1
    draws = (rng.integers(0, len(y), len(y)) for _ in range(n_boot))
    return float(np.mean([sign * (fn(y[i], b[i]) - fn(y[i], a[i])) > 0 for i in draws]))


def _fmt(names, weights) -> str:
    return ", ".join(f"{n}={w:.3g}" for n, w in zip(names, weights) if w > 0)


def fit_blend(oofs: dict, classes: list[str], metric: str | None = None, space: str = "prob",
              temperature: bool = True, decide: bool = True, runs: pd.DataFrame | None = None,
              verbose: bool = True) -> Blend:
    """The blend to submit, chosen on the OOF rows all models share, by ``metric``: None is the
    competition's, the ``monitor`` of the ``runs`` (``competition_metric``; printed with where it came
    from unless not ``verbose``, and kept in ``Blend.metric`` and ``metric_source``).

    With the OOF's ``fold`` column (2 folds or more) the strategies equal / best single / fitted
    weights, each followed by a temperature (and, with ``decide`` and metric accuracy or f1_macro,
    per-class decision offsets), are compared cross-fitted (``lib.predict.crossfit.crossfit_blend``): the
    best cross-fitted score wins and is refitted on all rows. Without folds, weights are fitted
    in-sample (``fit_blend_weights``) with a warning. The in-sample ``report`` (``blend_report``:
    each model, equal weights, fitted weights) ends with the ``calibrated_blend`` row: what is
    submitted (weights cell "...; T=...", plus "; offsets" when the decision layer is used).
    """

    metric, source = competition_metric(runs, metric)
    if verbose:
        print(f"blend metric: {metric} ({source})")
    models = sorted(oofs)
    ids = common_ids(oofs)
    if not ids:
        raise ValueError(f"models {models} share no OOF ids; were they trained on the same data and folds?")
    short = {m: len(o) for m, o in oofs.items() if len(o) > len(ids)}
    if short:
        warnings.warn(f"blend fitted on the {len(ids)} OOF ids all models share ({short} have more)",
                      stacklevel=2)
    aligned = [oofs[m].set_index("id").loc[ids] for m in models]
    y = aligned[0]["target"].to_numpy(np.int64)
    for m, a in zip(models, aligned):
        if not np.array_equal(a["target"].to_numpy(np.int64), y):
            raise ValueError(f"model {m} gives other targets than {models[0]} for the same ids")
    arrs = [a[classes].to_numpy(np.float64) for a in aligned]
    folds = next((a["fold"].to_numpy() for a in aligned if "fold" in a.columns), None)
    report = blend_report(dict(zip(models, arrs)), y, fit_blend_weights(arrs, y, metric, space), metric, space)
    if folds is not None and len(np.unique(folds)) >= 2:
        cf = crossfit_blend(arrs, y, folds, metric, space, temperature, decide, names=models)
        w, T, offsets, strategy, cross = cf.weights, cf.temperature, cf.offsets, cf.chosen, cf.probs
        tables = (cf.table, cf.decision)
    else:
        warnings.warn("the OOF tables have no fold column (or one fold): blend weights and temperature are "
                      "fitted and scored on the same rows, so the blend's OOF score is optimistic", stacklevel=2)
        w = fit_blend_weights(arrs, y, metric, space)
        T = fit_temperature(probs_to_logits(blend(arrs, w, space)), y) if temperature else 1.0
        offsets, strategy, cross, tables = None, "fitted", None, (None, None)
    raw = blend(arrs, w, space)
    probs = apply_temperature(probs_to_logits(raw), T)
    probs = apply_offsets(probs, offsets) if offsets is not None else probs
    named = ", ".join(f"{n}={v:.3g}" for n, v in zip(models, w) if v > 0)
    named += f"; T={T:.4g}" + ("; offsets" if offsets is not None else "")
    last = {"model": "calibrated_blend", "weights": named, **{c: score(c, y, probs) for c in report.columns[2:]}}
    report = pd.concat([report, pd.DataFrame([last])], ignore_index=True)
    return Blend(models, w, T, space, ids, y, raw, probs, report, offsets, strategy, folds, cross, *tables,
                 metric=metric, metric_source=source, temperature_fitted=bool(temperature))
