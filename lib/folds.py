"""Folds: which training images validate which run. Made once per competition, then fixed.

``folds.csv`` (id, fold) and ``folds.json`` (the settings that made it: n_folds, seed, group_col,
groups) are written to the competition's work folder on first use and read by every run, so all
backbones are validated on the same images and their out-of-fold predictions can be compared and
blended. When 01_eda has written ``eda/groups.csv`` (duplicate groups: exact, near, mirrored and
rotated copies), the folds keep each group together, so no copy validates while its twin trains.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .data import Competition
from .io import read_json, write_csv, write_json


def make_folds(comp: Competition, n_folds: int = 5, seed: int = 42, group_col: str | None = None,
               force: bool = False, verbose: bool = True) -> pd.DataFrame:
    """Assign each train image a fold: StratifiedGroupKFold over ``group_col`` (a labels-table
    column), else over 01_eda's duplicate groups (``eda/groups.csv``) when present, else StratifiedKFold.

    Written once to ``folds.csv`` (id, fold) in the competition's work folder and reused by every run;
    a later call with other settings or other ids is an error unless ``force``. Returns ``comp.train``
    with a ``fold`` column.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    path = comp.work / "folds.csv"
    meta = {"n_folds": n_folds, "seed": seed, "group_col": group_col}
    train = comp.train
    groups_csv = comp.work / "eda" / "groups.csv"
    if path.exists() and not force:
        folds = pd.read_csv(path, dtype={"id": str})
        saved = fold_settings(comp) or meta
        missing = set(train["id"]) - set(folds["id"])
        if verbose and not group_col and groups_csv.exists() and not saved.get("groups"):
            print(f"note: {path.name} was made before eda/groups.csv, so duplicates may straddle folds; delete "
                  f"{path} (and retrain) to split by duplicate groups")
        saved = {k: saved.get(k) for k in meta}  # the groups file is not a setting to compare
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
    groups = train[group_col] if group_col else None
    if groups is None and groups_csv.exists():
        table = pd.read_csv(groups_csv, dtype={"id": str}).set_index("id")["group"]
        extra = iter(range(int(table.max()) + 1 if len(table) else 0, 2**62))
        groups = pd.Series([int(table[i]) if i in table.index else next(extra) for i in train["id"]])
        meta["groups"] = "eda/groups.csv"
        if verbose:
            shared = int(groups.duplicated(keep=False).sum())
            print(f"folds keep 01_eda's duplicate groups together ({groups_csv}: {shared} images in "
                  f"{groups[groups.duplicated(keep=False)].nunique()} groups)")
    fold = np.full(len(train), -1, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        if groups is not None:
            splitter = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)
            splits = splitter.split(train, train["target"], groups=groups.to_numpy())
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
