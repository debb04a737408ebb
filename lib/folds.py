"""Folds: which training images validate which run. Made once per competition, then fixed.

``<root>/folds.csv`` (id, fold) and ``folds.json`` (the settings that made it: n_folds, seed,
group_col) are written on first use and read by every run, so all backbones are validated on the
same images and their out-of-fold predictions can be compared and blended.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .data import Competition
from .io import read_json, write_csv, write_json


def make_folds(comp: Competition, n_folds: int = 5, seed: int = 42, group_col: str | None = None,
               force: bool = False) -> pd.DataFrame:
    """Assign each train image a fold (StratifiedKFold, or StratifiedGroupKFold with ``group_col``).

    Written once to ``folds.csv`` (id, fold) in the competition's work folder and reused by every run;
    a later call with other settings or other ids is an error unless ``force``. Returns ``comp.train``
    with a ``fold`` column.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    path = comp.work / "folds.csv"
    meta = {"n_folds": n_folds, "seed": seed, "group_col": group_col}
    train = comp.train
    if path.exists() and not force:
        folds = pd.read_csv(path, dtype={"id": str})
        saved = fold_settings(comp) or meta
        missing = set(train["id"]) - set(folds["id"])
        if saved != meta or missing:
            why = f"settings {saved} vs {meta}" if saved != meta else f"{len(missing)} train ids not in it"
            raise ValueError(f"{path} does not fit this data ({why}); pass force=True (make_folds) or "
                             "delete it to re-split — existing runs then become incomparable")
        return train.merge(folds[["id", "fold"]], on="id", how="left")
    if group_col and group_col not in train.columns:
        raise ValueError(f"{comp.root}: group_col {group_col!r} is not a column of the training table "
                         f"({list(train.columns)}); it comes from a labels table (scan_args labels_csv)")
    small = train["label"].value_counts()
    small = small[small < n_folds]
    if len(small):
        warnings.warn(f"{len(small)} class(es) have fewer images than {n_folds} folds, so some folds "
                      f"lack them: {dict(small.head(10))}", stacklevel=2)
    fold = np.full(len(train), -1, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        if group_col:
            splitter = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)
            splits = splitter.split(train, train["target"], groups=train[group_col])
        else:
            splits = StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(train, train["target"])
        for k, (_, va) in enumerate(splits):
            fold[va] = k
    out = train.assign(fold=fold)
    write_csv(path, out[["id", "fold"]])
    write_json(path.with_suffix(".json"), meta)
    return out


def fold_settings(comp: Competition) -> dict | None:
    """The settings ``folds.csv`` was made with ({n_folds, seed, group_col}), or None before it exists."""
    path = comp.work / "folds.json"
    return read_json(path) if path.exists() and (comp.work / "folds.csv").exists() else None
