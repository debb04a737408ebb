"""Soft targets from a teacher table in a run's datasets, under the fold rule (``lib.predict.teacher``
writes the tables and explains the rule): distillation rows mixed into the training targets, and
pseudo-labelled test images joining training.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch

from lib.core.paths import resolve
from lib.data.folds import check_folds_hash

HELD_OUT = "held_out"
FOLDS_SHA1 = "folds_sha1"  # the folds hash (lib.data.folds.folds_hash) the table's fold runs trained on


def read_table(path, classes: list[str], folds: pd.DataFrame | None = None) -> pd.DataFrame:
    """A teacher table as id, held_out (float; NaN where the table does not say) and one column per
    class (float64, rows renormalised to sum 1). ``held_out`` is read from ``held_out`` or ``fold``.
    With ``folds`` (the fold table of the student, a fold run) the table's held_out must mean these folds
    (``check_split``)."""
    df = pd.read_csv(resolve(path), dtype={"id": str, FOLDS_SHA1: str})
    missing = [c for c in ["id", *classes] if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: a teacher table needs id and one probability column per class; it lacks "
                         f"{missing[:5]} (was it made for another competition?)")
    if folds is not None:
        check_split(df, folds, path)
    p = df[classes].to_numpy(np.float64)
    if not np.isfinite(p).all() or (p < 0).any() or np.abs(p.sum(axis=1) - 1).max() > 1e-3:
        raise ValueError(f"{path}: teacher rows must be class probabilities (finite, >= 0, each row summing to 1)")
    col = HELD_OUT if HELD_OUT in df.columns else "fold" if "fold" in df.columns else None
    held = pd.to_numeric(df[col], errors="coerce") if col else pd.Series(np.nan, index=df.index)
    return pd.concat([pd.DataFrame({"id": df["id"], HELD_OUT: held.astype(float)}),
                      pd.DataFrame(p / p.sum(axis=1, keepdims=True), columns=classes)], axis=1)


def check_split(df: pd.DataFrame, folds: pd.DataFrame, path) -> None:
    """Raise ValueError unless the teacher table ``df`` (read from ``path``) was made by fold runs of this
    fold table ``folds``: its ``folds_sha1`` (``lib.predict.teacher`` writes it) is ``folds``'s hash.
    After a re-split "held_out k" names another fold k: that model trained on images now in fold k. A
    table without the column (made by hand or by an older kit) cannot be checked: a warning says so."""
    if FOLDS_SHA1 not in df.columns:
        warnings.warn(f"{path}: the teacher table records no folds hash ({FOLDS_SHA1}: made by hand or by an older "
                      f"kit), so its held_out folds cannot be checked against the current folds.csv; rebuild it "
                      f"with python -m lib.ops.teacher", stacklevel=3)
        return
    made = sorted(set(df[FOLDS_SHA1].dropna()))
    for h in made if made else ["none"]:
        check_folds_hash(h, folds, f"teacher table {path} was made by fold runs trained",
                         "its held_out folds are not these folds, so its rows come from models that trained on "
                         "images this run validates on; retrain the teacher's fold runs on the current folds.csv "
                         "and rebuild the teacher table after re-splitting (python -m lib.ops.teacher)")


def safe_rows(table: pd.DataFrame, ids, classes: list[str], fold: int | None, what: str, path) -> np.ndarray:
    """float64 [len(ids), C]: per id, the mean of the teacher rows student ``fold`` may use (those with
    ``held_out == fold``; every row when ``fold`` is None, a full-data run). Raises, naming the fold
    rule, when an id has no such row."""
    ids = pd.Index(ids)
    known = table[table["id"].isin(ids)]
    usable = known if fold is None else known[known[HELD_OUT] == fold]
    mean = usable.groupby("id")[classes].mean()
    lacking = ids.difference(mean.index)
    if len(lacking) == 0:
        return mean.loc[ids].to_numpy(np.float64)
    seen = known[known["id"].isin(lacking)]
    if seen.empty:
        raise ValueError(f"{path}: no teacher row for {len(lacking)} of the {len(ids)} {what} (e.g. "
                         f"{lacking[0]!r}); the table must cover every image the student learns from")
    held = sorted({"unknown" if np.isnan(h) else int(h) for h in seen[HELD_OUT]}, key=str)
    raise ValueError(
        f"{path}: refused by the fold rule: {len(lacking)} of the {len(ids)} {what} of the fold {fold} run have "
        f"teacher rows only from models that held out fold(s) {held}, not fold {fold}: those models trained on "
        f"fold {fold}'s validation images (or the table does not say), so their predictions would leak into its "
        f"score. A K-fold OOF, 04's oof_blend.csv or a fold-mean test prediction never qualifies; use "
        f"lib.predict.teacher.teacher_table of the teacher's fold runs (student fold k learns from teacher fold k "
        f"only)")


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Rows of probabilities [N, C] at ``temperature``: ``p ** (1 / T)`` renormalised (T > 1 softer)."""
    if temperature == 1:
        return probs
    q = np.power(np.clip(probs, 0.0, 1.0), 1.0 / temperature)
    return q / q.sum(axis=1, keepdims=True)


def select_pseudo(probs: np.ndarray, threshold: float | None, temperature: float = 1.0) -> tuple[np.ndarray, ...]:
    """(keep bool [M], targets float64 [K, C]) of M teacher rows: with ``threshold`` the rows whose max
    probability is >= it, as one-hot rows of their argmax; with None every row, softened."""
    if threshold is None:
        return np.ones(len(probs), bool), soften(probs, temperature)
    keep = probs.max(axis=1) >= threshold
    return keep, np.eye(probs.shape[1])[probs[keep].argmax(axis=1)]


def add_teacher(cfg, comp, folds: pd.DataFrame, train_rows: pd.DataFrame, train, test_images):
    """The training set of the recipe's teacher: ``train`` (the ImageDataset of ``train_rows``) with
    distillation targets (``teacher``), joined by the pseudo-labelled test images (``pseudo_labels``;
    ``test_images(rows)`` builds the augmented ImageDataset of rows of ``comp.test``). ``train``
    unchanged when the recipe has neither. Refuses rows the fold rule forbids (module docstring), and
    tables made on other folds than ``folds`` (the competition's fold table; not for a full-data run)."""
    if not (cfg.teacher or cfg.pseudo_labels):
        return train
    fold = None if cfg.full_data else cfg.fold
    split = None if cfg.full_data else folds
    hard = np.eye(comp.num_classes)[train_rows["target"].to_numpy()]
    soft = None
    if cfg.teacher:
        rows = safe_rows(read_table(cfg.teacher, comp.classes, split), train_rows["id"], comp.classes, fold,
                         "training images", cfg.teacher)
        soft = (1 - cfg.teacher_weight) * hard + cfg.teacher_weight * soften(rows, cfg.teacher_temperature)
    if not cfg.pseudo_labels:
        return _labelled(train, train.targets, soft)
    table = read_table(cfg.pseudo_labels, comp.classes, split)
    unknown = sorted(set(table["id"]) - set(comp.test["id"]))
    if unknown:
        raise ValueError(f"{cfg.pseudo_labels}: {len(unknown)} ids are not test images of {comp.root} "
                         f"(e.g. {unknown[0]!r}); pseudo_labels is a table of test-image predictions")
    probs = safe_rows(table, comp.test["id"], comp.classes, fold, "test images", cfg.pseudo_labels)
    keep, targets = select_pseudo(probs, cfg.pseudo_threshold, cfg.teacher_temperature)
    if not keep.any():
        raise ValueError(f"pseudo_threshold {cfg.pseudo_threshold} keeps no test image (the teacher's highest "
                         f"probability is {probs.max():.3f}); lower it or set it None")
    if cfg.verbose:
        print(f"pseudo-labels: {int(keep.sum())} of {len(keep)} test images join the training set "
              f"({'hard' if cfg.pseudo_threshold is not None else 'soft'} targets)")
    extra = test_images(comp.test[keep].reset_index(drop=True))
    any_soft = soft is not None or cfg.pseudo_threshold is None
    train = _labelled(train, train.targets, (hard if soft is None else soft) if any_soft else None)
    return Joined(train, _labelled(extra, targets.argmax(axis=1), targets if any_soft else None))


def _labelled(ds, targets, soft):
    """``ds`` (an ImageDataset) with hard ``targets`` [N] and ``soft`` rows [N, C] or None."""
    targets = np.asarray(targets, np.int64)
    if len(targets) != len(ds) or (soft is not None and np.shape(soft)[0] != len(ds)):
        raise ValueError(f"{len(ds)} images but {len(targets)} targets")
    ds.targets, ds.soft = targets, None if soft is None else np.asarray(soft, np.float32)
    return ds


class Joined(torch.utils.data.Dataset):
    """Two ImageDatasets as one: the training images, then the pseudo-labelled test images. ``targets``
    (and ``soft``) are theirs concatenated; setting ``epoch`` (``ReseedEachEpoch``) sets both."""

    def __init__(self, first, second):
        self.parts = (first, second)
        self.targets = np.concatenate([first.targets, second.targets])
        self.soft = None if first.soft is None else np.concatenate([first.soft, second.soft])

    @property
    def epoch(self) -> int:
        return self.parts[0].epoch

    @epoch.setter
    def epoch(self, value: int):
        for p in self.parts:
            p.epoch = value

    def __len__(self) -> int:
        return len(self.parts[0]) + len(self.parts[1])

    def __getitem__(self, i: int):
        n = len(self.parts[0])
        return self.parts[0][i] if i < n else self.parts[1][i - n]
