"""Submissions: shaped like the competition's sample submission, validated, written atomically.

A submission is a DataFrame shaped like ``sample_submission.csv``: the ID column first (whatever its
name), then one probability column per class in the sample's order, or (a label submission, given
``label_values``: what it writes for each class) one label column holding a class's label value in
the sample's dtype, or (a binary submission, given ``positive``: a class index) one column holding
the probability of that class. Nothing is written that does not pass ``validate_submission``.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from lib.core.io import read_json, write_csv, write_json
from lib.core.paths import resolve
from lib.data.competition import Competition
from lib.predict.blend import Blend, blend_test
from lib.predict.lb_log import expected_record
from lib.predict.oof import FOLD_SPACE
from lib.predict.refit import refit_plan


def _few(values, n: int = 5) -> str:
    values = list(values)
    more = f" ... (+{len(values) - n} more)" if len(values) > n else ""
    return ", ".join(repr(v) for v in values[:n]) + more

def validate_submission(sub: pd.DataFrame, sample: pd.DataFrame, atol: float = 1e-6,
                        label_values: list | None = None) -> None:
    """Raise ValueError naming every problem of ``sub`` against the sample submission; None if fine.

    Checks: columns (missing, extra, order), IDs in the first column (duplicates, missing, unknown,
    row order), probability values (non-numeric, NaN/inf, < 0 or > 1, row sums off 1 by > atol; a
    sample with one probability column holds one class's probability, so no sum) or, with
    ``label_values``, labels (one of them, in the sample's dtype).
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

    if label_values is not None:
        problems += _label_problems(sub, sample, label_values)
        cls_cols = []
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
        if len(present) == len(cls_cols) > 1 and not bad.any():
            off = np.abs(v.sum(axis=1) - 1.0)
            n_off = int((off > atol).sum())
            if n_off:
                r = int(off.argmax())
                problems.append(f"{n_off} rows do not sum to 1 (atol={atol}); worst is {row(r)} "
                                f"summing to {v[r].sum():.8g}")
    if problems:
        raise ValueError("submission does not match the sample submission:\n  - "
                         + "\n  - ".join(problems))

def _label_problems(sub: pd.DataFrame, sample: pd.DataFrame, label_values: list) -> list[str]:
    col = sample.columns[1]
    if col not in sub.columns:
        return []
    out = []
    bad = ~sub[col].isin(label_values)
    if bad.any():
        out.append(f"{int(bad.sum())} labels are not class labels, e.g. {_few(sub.loc[bad, col].unique())}; "
                   f"valid: {_few(label_values, 8)}")
    if pd.api.types.is_numeric_dtype(sample[col]) != pd.api.types.is_numeric_dtype(sub[col]):
        out.append(f"column {col!r} is {sub[col].dtype} but the sample's is {sample[col].dtype}")
    return out


def make_submission(probs, ids, sample: pd.DataFrame, clip_eps: float = 1e-15,
                    label_values: list | None = None, positive: int | None = None) -> pd.DataFrame:
    """Submission DataFrame from probs [N, C] whose rows belong to ``ids`` [N] (any order).

    Rows follow the sample's ID order (every sample ID must be in ``ids``, and no other), columns
    follow the sample, probabilities are clipped to [clip_eps, 1-clip_eps] and renormalised like the
    metric. With ``label_values`` (a label submission: one value per class of ``probs``' columns) each
    row gets the label of its most probable class instead; with ``positive`` (a binary submission: the
    sample has one probability column) each row gets that class's probability. The result is checked
    with ``validate_submission``.
    """
    id_col, cls_cols = sample.columns[0], list(sample.columns[1:])
    p = np.asarray(probs, dtype=np.float64)
    ids = pd.Index(np.asarray(ids))
    n_cols = len(label_values) if label_values is not None else 2 if positive is not None else len(cls_cols)
    if positive is None and label_values is None and len(cls_cols) == 1:
        raise ValueError(f"the sample has one probability column {cls_cols[0]!r}: a binary submission; pass "
                         "positive= (Competition.positive), the class whose probability it holds")
    if p.ndim != 2 or p.shape[1] != n_cols:
        raise ValueError(f"probs has shape {p.shape}; the sample has {n_cols} classes, so probs must be "
                         f"[N, {n_cols}]")
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
    p = p[ids.get_indexer(want)]
    if label_values is not None:
        labels = np.asarray(label_values, dtype=object)[p.argmax(axis=1)]
        sub = pd.DataFrame({id_col: want.to_numpy(), cls_cols[0]: pd.array(labels, dtype=sample[cls_cols[0]].dtype)
                            if pd.api.types.is_numeric_dtype(sample[cls_cols[0]]) else labels.astype(str)})
        validate_submission(sub, sample, label_values=label_values)
        return sub
    p = np.clip(p, clip_eps, 1 - clip_eps)
    p = p / p.sum(axis=1, keepdims=True)
    sub = pd.DataFrame(p[:, [positive]] if positive is not None else p, columns=cls_cols)
    sub.insert(0, id_col, want.to_numpy())
    validate_submission(sub, sample)
    return sub

def with_unreadable_rows(ids, probs, comp: Competition) -> tuple[np.ndarray, np.ndarray]:
    """(ids [N'], probs [N', C]) with a row for each sample ID whose test image could not be read
    (``Competition.unreadable_test_ids``): the training class prior, so one broken file costs one
    row's prior, not the submission. Warns naming them and the scan's reason."""
    missing = [i for i in comp.unreadable_test_ids if i not in set(map(str, ids))]
    if not missing:
        return np.asarray(ids), np.asarray(probs)
    why = comp.problems.loc[comp.problems["split"] == "test", ["path", "problem"]]
    warnings.warn(f"{len(missing)} test image(s) could not be read, so their rows get the training class prior: "
                  f"IDs {_few(missing)}; {'; '.join(f'{r.path}: {r.problem}' for r in why.head(3).itertuples())}",
                  stacklevel=2)
    prior = np.tile(comp.class_prior(), (len(missing), 1))
    return np.concatenate([np.asarray(ids, dtype=object), np.asarray(missing, dtype=object)]), \
        np.concatenate([np.asarray(probs, dtype=np.float64), prior])


def write_submission(df: pd.DataFrame, path, sample: pd.DataFrame, label_values: list | None = None):
    """Validate ``df`` against the sample, then write it as CSV atomically; returns the Path."""
    validate_submission(df, sample, label_values=label_values)
    return write_csv(path, df)


def write_ensemble(b: Blend, tests: dict, comp: Competition, runs_dir="runs",
                   submission="runs/submission.csv", runs: pd.DataFrame | None = None, tta=("identity",),
                   tta_space: str = "prob", expected: dict | None = None,
                   refits: pd.DataFrame | None = None, predict_size: int | None = None) -> pd.DataFrame:
    """Write the submission (sample_submission's ids, row and column order; validated before
    writing), ``<runs_dir>/ensemble/blend_report.csv``, ``crossfit.csv`` and ``decision.csv`` (the
    cross-fitted comparisons), ``expected_score.json`` (given ``expected``, from
    ``lib.predict.calibrate.expected_score``, with the submission's path and sha1, by which
    ``lib.predict.lb_log`` finds the CV of a leaderboard score), ``oof_blend.csv`` (id, target, classes),
    ``test_<model>.csv`` (each single model's test predictions, its folds' mean with the same TTA, as
    a submission: uncalibrated, no temperature and no decision offsets, so its leaderboard score is the
    model's raw one; compare accuracy-type scores with the blend's, not log loss) and, given ``runs`` (``open_runs``),
    ``blend.json``: what 05_inference needs to predict a hidden test set (``save_blend``), with the
    full-data refits mixed into ``tests`` (``refits``, from ``lib.predict.refit.refit_tests``) and the size the
    runs predicted at (``predict_size``, ``PredictSpec.size``; None: their own). Test images
    that could not be read get the class prior (``with_unreadable_rows``). Returns the submission."""
    if comp.sample_submission is None:
        raise FileNotFoundError(f"{comp.root}/sample_submission.csv is missing: it fixes the submission's "
                                "ids and columns; copy it from the competition")
    ids, probs = with_unreadable_rows(*blend_test(b, tests, comp.classes), comp)
    sample, values = comp.sample_submission, comp.label_values
    sub = make_submission(probs, ids, sample, label_values=values, positive=comp.positive)
    write_submission(sub, resolve(submission), sample, values)
    out = resolve(runs_dir) / "ensemble"
    write_csv(out / "blend_report.csv", b.report)
    for name, table in (("crossfit.csv", b.crossfit), ("decision.csv", b.decision)):
        if table is not None:
            write_csv(out / name, table)
    if expected is not None:
        write_json(out / "expected_score.json", expected_record(expected, submission))  # with its sha1
    oof = pd.DataFrame(b.probs, columns=comp.classes)
    oof.insert(0, "target", b.y), oof.insert(0, "id", b.ids)
    write_csv(out / "oof_blend.csv", oof)
    if runs is not None:
        save_blend(b, out / "blend.json", runs, tta, tta_space, comp.class_table(), refits, predict_size)
    for m in b.models:
        m_ids = tests[m]["id"].to_numpy()
        t_ids, t = with_unreadable_rows(m_ids, tests[m][comp.classes].to_numpy(np.float64), comp)
        sub_m = make_submission(t, t_ids, sample, label_values=values, positive=comp.positive)
        write_submission(sub_m, out / f"test_{m}.csv", sample, values)
    return sub


def save_blend(b: Blend, path, runs: pd.DataFrame, tta, tta_space: str, class_table: dict,
               refits: pd.DataFrame | None = None, predict_size: int | None = None) -> Path:
    """The blend as 05_inference needs it to predict a hidden test set from the runs alone: each
    model's runs, weights, space, the test temperature (and the OOF one, and whether it was fitted), the
    decision offsets per class, TTA ops and space, the size the runs predicted at (``predict_size``;
    None: each its own img_size), how the fold models were averaged (``fold_space``: the temperature was
    fitted to that mean), the class table and the full-data refits mixed in (``refits``). JSON, atomic."""
    model_runs = {m: sorted(runs.loc[runs["model"] == m, "run_name"]) for m in b.models}
    offsets = None if b.offsets is None else dict(zip(class_table["classes"], map(float, b.offsets)))
    T = b.temperature if b.test_temperature is None else b.test_temperature  # what the test predictions get
    return write_json(path, {"models": model_runs, "weights": dict(zip(b.models, map(float, b.weights))),
                             "space": b.space, "temperature": float(T), "oof_temperature": float(b.temperature),
                             "temperature_fitted": bool(b.temperature_fitted), "offsets": offsets,
                             "tta": list([tta] if isinstance(tta, str) else tta), "tta_space": tta_space,
                             "predict_size": predict_size, "fold_space": FOLD_SPACE,
                             "class_table": class_table, "refit": refit_plan(refits, b.models)})


def load_blend(path) -> dict:
    """A blend file of ``save_blend``; a clear error when 04 has not written one. A file from before
    ``temperature_fitted`` was recorded gets what 04 then assumed: fitted unless the OOF T is 1; one from
    before ``predict_size``, None (each run at its own size); one from before ``fold_space`` was recorded
    averaged the fold models' probabilities ("prob"), and its temperature was fitted to that mean."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no blend file; run 04_ensemble_tta first (it writes the weights, "
                                "temperature and TTA that 05_inference applies)")
    plan = read_json(path)
    plan.setdefault("temperature_fitted", plan.get("oof_temperature", plan.get("temperature", 1.0)) != 1.0)
    plan.setdefault("predict_size", None)
    plan.setdefault("fold_space", "prob")
    return plan
