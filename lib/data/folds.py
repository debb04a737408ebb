"""Folds: which training images validate which run. Made once per competition, then fixed.

``folds.csv`` (id, fold) and ``folds.json`` (the settings that made it: n_folds, seed, group_col,
groups) are written to the competition's work folder on first use and read by every run, so all
backbones are validated on the same images and their out-of-fold predictions can be compared and
blended. When 01_eda has written ``eda/groups.csv`` (duplicate groups: exact, near, mirrored and
rotated copies), the folds keep each group together, so no copy validates while its twin trains.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from lib.core.io import read_json, write_csv, write_json
from lib.core.rundir import RunDir
from lib.data.competition import Competition


def make_folds(comp: Competition, n_folds: int = 5, seed: int = 42, group_col: str | None = None,
               force: bool = False, verbose: bool = True) -> pd.DataFrame:
    """Assign each train image a fold: StratifiedGroupKFold over ``group_col`` (a labels-table
    column), else over 01_eda's duplicate groups (``eda/groups.csv``) when present, else StratifiedKFold.

    Written once to ``folds.csv`` (id, fold) in the competition's work folder and reused by every run;
    a later call with other settings or other ids is an error unless ``force``. Returns ``comp.train``
    with a ``fold`` column.
    """

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
SAMPLE = 512  # training images a full-data run scores after each epoch (a learning check, not a score)


def split_rows(cfg, folds: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train rows, scored rows) of ``folds`` (comp.train with its fold): fold ``cfg.fold`` is scored and
    the others train; with ``full_data`` every image trains and a fixed sample of them is scored."""
    if not cfg.full_data:
        return folds[folds["fold"] != cfg.fold], folds[folds["fold"] == cfg.fold]
    return folds, folds.sample(min(SAMPLE, len(folds)), random_state=0).sort_index()


def folds_hash(folds: pd.DataFrame) -> str:
    """16 hex digits of the sha1 of the fold table (id, fold), sorted by id: equal for equal folds.csv."""
    rows = folds[["id", "fold"]].astype({"id": str, "fold": int}).sort_values("id")
    text = "\n".join(f"{i},{f}" for i, f in zip(rows["id"], rows["fold"]))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def check_same_split(src: Path, fold: int, folds: pd.DataFrame, where: str, remedy: str = "") -> None:
    """Raise ValueError unless the fold run in ``src`` held out fold ``fold`` of exactly this fold
    table ``folds`` (id, fold): the ``folds_sha1`` its metrics.json records or, for a run from before
    that record, the ids of its oof.csv. ``where`` names the run in the message, ``remedy`` ends it."""
    mine = folds_hash(folds)
    metrics = read_json(src / RunDir.METRICS) if (src / RunDir.METRICS).exists() else {}
    if "folds_sha1" in metrics:
        if metrics["folds_sha1"] != mine:
            raise ValueError(f"{where} was trained on another fold assignment (folds.csv hash {metrics['folds_sha1']}, "
                             f"this one's {mine}): its fold {fold} is not this one, so it trained on images "
                             f"held out here; retrain it on the current folds.csv{remedy}")
        return
    if not (src / RunDir.OOF).exists():
        raise ValueError(f"{where}: its metrics.json records no folds hash (folds_sha1) and it has no oof.csv to "
                         f"compare fold images with; let it complete (rerun it){remedy}")
    theirs_ids = set(pd.read_csv(src / RunDir.OOF, usecols=["id"], dtype={"id": str})["id"])
    if theirs_ids != set(folds.loc[folds["fold"] == fold, "id"].astype(str)):
        raise ValueError(f"{where} validated on other images than fold {fold} (its oof.csv): another "
                         f"folds.csv (or max_samples); retrain it on the current folds.csv{remedy}")
