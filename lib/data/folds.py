"""Folds: which training images validate which run. Made once per competition, then fixed.

``folds.csv`` (id, fold) and ``folds.json`` (the settings that made it: n_folds, seed, group_col,
groups, and how many train images 01_eda checked for duplicates) are written to the competition's work
folder on first use and read by every run, so all backbones are validated on the same images and their
out-of-fold predictions can be compared and blended. When 01_eda has written ``eda/groups.csv``
(duplicate groups: exact, near, mirrored and rotated copies), the folds keep each group together, also
across ``group_col`` groups, so no copy validates while its twin trains; folds made without that check
of every train image say so with a ``DuplicatesUnchecked`` warning wherever they are used.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from lib.core.io import file_sha256, read_json, write_csv, write_json
from lib.core.paths import resolve
from lib.core.rundir import RunDir
from lib.data.competition import Competition, work_folder


class DuplicatesUnchecked(UserWarning):
    """The folds were made without 01_eda's duplicate check of every train image: a copy may validate while
    its twin trains, and the CV score is then better than the leaderboard's."""


def make_folds(comp: Competition, n_folds: int = 5, seed: int = 42, group_col: str | None = None,
               force: bool = False, verbose: bool = True) -> pd.DataFrame:
    """Assign each train image a fold: StratifiedGroupKFold over the connected components of images
    linked by sharing a ``group_col`` value (a labels-table column) or a duplicate group of 01_eda
    (``eda/groups.csv``), so no group and no duplicate pair is split; StratifiedKFold when neither exists.

    Written once to ``folds.csv`` (id, fold) in the competition's work folder and reused by every run;
    a later call with other settings or other ids is an error unless ``force``. ``folds.json`` records
    the settings and how far duplicates were checked (``duplicate_groups``); folds made before 01_eda
    or after a sampled one (``max_images``) raise ``DuplicatesUnchecked`` each time they are used.
    Returns ``comp.train`` with a ``fold`` column.
    """

    path = comp.work / "folds.csv"
    meta = {"n_folds": n_folds, "seed": seed, "group_col": group_col}
    train = comp.train
    if path.exists() and not force:
        folds = pd.read_csv(path, dtype={"id": str})
        saved = fold_settings(comp) or meta
        missing = set(train["id"]) - set(folds["id"])
        settings = {k: saved.get(k) for k in meta}  # coverage and the groups file are not settings to compare
        if settings != meta or missing:
            why = f"settings {settings} vs {meta}" if settings != meta else f"{len(missing)} train ids not in it"
            raise ValueError(f"{path} does not fit this data ({why}); pass force=True (make_folds) or "
                             "delete it to re-split — existing runs then become incomparable")
        warn_unchecked_duplicates(comp, saved)
        return train.merge(folds[["id", "fold"]], on="id", how="left")
    if group_col and group_col not in train.columns:
        raise ValueError(f"{comp.root}: group_col {group_col!r} is not a column of the training table "
                         f"({list(train.columns)}); it comes from a labels table (scan_args labels_csv)")
    small = train["label"].value_counts()
    small = small[small < n_folds]
    if len(small):
        warnings.warn(f"{len(small)} class(es) have fewer images than {n_folds} folds, so some folds "
                      f"lack them: {dict(small.head(10))}", stacklevel=2)
    dup, coverage = duplicate_groups(comp)
    meta.update(coverage)
    groups = linked_groups(train[group_col] if group_col else None, dup)
    if verbose and dup is not None:
        shared = dup[dup.duplicated(keep=False) & dup.notna()]
        print(f"folds keep 01_eda's duplicate groups together ({comp.work / GROUPS}: {len(shared)} images in "
              f"{shared.nunique()} groups)" + (f", joined with the {group_col!r} groups into "
                                               f"{len(np.unique(groups))} groups" if group_col else ""))
    fold = np.full(len(train), -1, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        if groups is not None:
            splitter = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)
            splits = splitter.split(train, train["target"], groups=groups)
        else:
            splits = StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(train, train["target"])
        for k, (_, va) in enumerate(splits):
            fold[va] = k
    out = train.assign(fold=fold)
    write_csv(path, out[["id", "fold"]])
    write_json(path.with_suffix(".json"), meta)
    warn_unchecked_duplicates(comp, meta)
    return out


GROUPS = "eda/groups.csv"  # 01_eda's duplicate groups (lib.insight.duplicates.fold_groups), under comp.work


def duplicate_groups(comp: Competition) -> tuple[pd.Series | None, dict]:
    """(01_eda's duplicate group per train image, in ``comp.train`` order: NaN where it lists none; None
    without ``eda/groups.csv``) and its coverage for folds.json: groups (the file, when used),
    duplicates_checked (every train image went through the duplicate pass), eda_images (how many did:
    its ``checked`` column), train_images."""
    csv = comp.work / GROUPS
    n = len(comp.train)
    if not csv.exists():
        return None, {"duplicates_checked": False, "eda_images": 0, "train_images": n}
    table = pd.read_csv(csv, dtype={"id": str}).set_index("id")
    group = comp.train["id"].map(table["group"]).reset_index(drop=True)
    checked = table["checked"].astype(bool) if "checked" in table.columns else None  # older 01_eda: unknown
    seen = int(comp.train["id"].map(checked).fillna(False).astype(bool).sum()) if checked is not None else None
    return group, {"groups": GROUPS, "duplicates_checked": seen == n, "eda_images": seen, "train_images": n}


def linked_groups(*columns: pd.Series | None) -> np.ndarray | None:
    """One int per image: the connected components of images linked by sharing a value in any of
    ``columns`` (equal-length Series; NaN links nothing). None when every column is None."""
    columns = [c for c in columns if c is not None]
    if not columns:
        return None
    n = len(columns[0])
    images, nodes, offset = [], [], n  # a bipartite graph: images and the values they share
    for c in columns:
        codes = pd.factorize(c.reset_index(drop=True))[0]
        has = codes >= 0
        images.append(np.flatnonzero(has))
        nodes.append(codes[has] + offset)
        offset += int(codes.max()) + 1 if has.any() else 0
    i, j = np.concatenate(images), np.concatenate(nodes)
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(offset, offset))
    return connected_components(graph, directed=False)[1][:n]


def unchecked_duplicates(settings: dict | None) -> str | None:
    """Why folds with these folds.json ``settings`` may split a duplicate pair, and what to do; None when
    01_eda's duplicate pass saw every train image before they were made (or there are no folds yet)."""
    if settings is None or settings.get("duplicates_checked"):
        return None
    redo = "then delete folds.csv (and folds.json) and retrain, so no copy validates while its twin trains"
    n, seen = settings.get("train_images"), settings.get("eda_images")
    if "duplicates_checked" not in settings or seen is None:
        return (f"it does not record which train images 01_eda checked for duplicates (made by an older kit): "
                f"rerun 01_eda on every image (max_images=None), {redo}")
    if seen == 0:
        return (f"it was made before 01_eda's duplicate groups ({GROUPS}), so duplicate images may sit in "
                f"different folds and the CV score is optimistic: run 01_eda (max_images=None) first, {redo}")
    return (f"01_eda checked {seen} of the {n} train images for duplicates (a sample: max_images, or images "
            f"added since), so copies among the rest may sit in different folds and the CV score is optimistic: "
            f"rerun 01_eda with max_images=None, {redo}")


def warn_unchecked_duplicates(comp: Competition, settings: dict | None = None) -> None:
    """Raise ``DuplicatesUnchecked`` (a warning, shown by every notebook) when the folds of ``comp``
    (``settings``, default its folds.json) were made without a duplicate check of every train image."""
    why = unchecked_duplicates(fold_settings(comp) if settings is None else settings)
    if why:
        warnings.warn(f"{comp.work / 'folds.csv'}: {why}", DuplicatesUnchecked, stacklevel=3)


def fold_settings(comp: Competition) -> dict | None:
    """The settings ``folds.csv`` was made with ({n_folds, seed, group_col} and the duplicate coverage of
    ``duplicate_groups``), or None before it exists."""
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


TABLES = ("exclude_ids", "teacher", "pseudo_labels")  # the recipe's tables a run trains on (by path)


def data_record(cfg) -> dict:
    """What a run trains on besides its recipe, as the files are now (a run's data.json,
    ``lib.core.rundir.data_changes``): folds_csv (its competition's folds.csv) and folds_sha1 (``folds_hash``
    of it; None when there is none yet), tables {setting: {path, sha256}} of the tables ``cfg`` names
    (``TABLES``; sha256 None when the file is gone). Reads no image and writes nothing."""
    path = work_folder(cfg.data_dir) / "folds.csv"
    sha1 = folds_hash(pd.read_csv(path, dtype={"id": str})) if path.exists() else None
    return {"folds_csv": str(path), "folds_sha1": sha1,
            "tables": {k: {"path": getattr(cfg, k), "sha256": file_sha256(resolve(getattr(cfg, k)))}
                       for k in TABLES if getattr(cfg, k)}}


def check_folds_hash(recorded: str, folds: pd.DataFrame, where: str, consequence: str) -> None:
    """Raise ValueError unless ``recorded`` (a ``folds_hash``) is the hash of this fold table ``folds``:
    ``where`` says what was made on the other folds ("<run> was trained"), ``consequence`` what follows and
    what to do."""
    mine = folds_hash(folds)
    if recorded != mine:
        raise ValueError(f"{where} on another fold assignment (folds.csv hash {recorded}, this one's {mine}): "
                         f"{consequence}")


def check_same_split(src: Path, fold: int, folds: pd.DataFrame, where: str, remedy: str = "") -> None:
    """Raise ValueError unless the fold run in ``src`` held out fold ``fold`` of exactly this fold
    table ``folds`` (id, fold): the ``folds_sha1`` its metrics.json records or, for a run from before
    that record, the ids of its oof.csv. ``where`` names the run in the message, ``remedy`` ends it."""
    metrics = read_json(src / RunDir.METRICS) if (src / RunDir.METRICS).exists() else {}
    if "folds_sha1" in metrics:
        check_folds_hash(metrics["folds_sha1"], folds, f"{where} was trained",
                         f"its fold {fold} is not this one, so it trained on images held out here; retrain it on "
                         f"the current folds.csv{remedy}")
        return
    if not (src / RunDir.OOF).exists():
        raise ValueError(f"{where}: its metrics.json records no folds hash (folds_sha1) and it has no oof.csv to "
                         f"compare fold images with; let it complete (rerun it){remedy}")
    theirs_ids = set(pd.read_csv(src / RunDir.OOF, usecols=["id"], dtype={"id": str})["id"])
    if theirs_ids != set(folds.loc[folds["fold"] == fold, "id"].astype(str)):
        raise ValueError(f"{where} validated on other images than fold {fold} (its oof.csv): another "
                         f"folds.csv (or max_samples); retrain it on the current folds.csv{remedy}")
