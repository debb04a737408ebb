"""The tables competitions ship beside their images: labels, class names, the sample submission.

    read_labels_table(root, root / "train.csv", problems)   # id, path, label (+ group) per train image
    read_class_names(root)                                  # {label value: class name} from meta.csv
    read_sample_submission(root); submission_kind(sample)   # the sample, and "probs" or "label"
    resolve_classes(root, work, train, sample, labels_csv)  # class order, names, label values (classes.json)

A labels table names each image by an id (with or without its extension) or a path, in a flat or a
nested image folder; its columns are detected among the usual names unless given. A sample
submission is either one probability column per class (``ID,<class 1>,...,<class C>``) or one label
per row (``ID,target``: class indices or names).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from lib.core.io import read_json, write_json
from lib.data.images import IMAGE_EXTS

ID_COLS = ("id", "ID", "Id", "image_id", "img_id", "filename", "file_name", "image", "file")
PATH_COLS = ("img_path", "path", "filepath", "file_path", "image_path")
LABEL_COLS = ("label", "target", "class", "category", "class_name", "labels", "class_id")
NAME_COLS = ("class_name", "name", "label_name", "class", "category")
META_FILES = ("meta.csv", "classes.csv", "class_names.csv", "label_names.csv")


def pick_column(df: pd.DataFrame, given: str | None, candidates, csv: Path) -> str | None:
    """``given`` (which must be a column of ``df``), else the first of ``candidates`` that is one."""
    if given:
        if given not in df.columns:
            raise ValueError(f"{csv}: no column {given!r} (columns: {list(df.columns)})")
        return given
    return next((c for c in candidates if c in df.columns), None)


def image_index(folder: Path) -> dict[str, str]:
    """Every image under ``folder`` (nested folders too) by file name and by stem -> its path.

    A name or stem found in two places maps to "" (ambiguous), so a lookup can say so."""
    out: dict[str, str] = {}
    if not folder.is_dir():
        return out
    for dirpath, _, files in os.walk(folder):
        for f in files:
            if Path(f).suffix.lower() in IMAGE_EXTS and not f.startswith("."):
                p = str(Path(dirpath, f).resolve())
                for key in {f, Path(f).stem}:
                    out[key] = "" if key in out and out[key] != p else p
    return out


def find_images(root: Path, split: str, ids, csv: Path) -> list[str]:
    """Paths of ``ids`` (names with or without extension) under ``root/<split>/`` (any depth; under
    ``root`` when there is no such folder). An id that two files share is an error."""
    index = image_index(root / split if (root / split).is_dir() else root)
    paths, ambiguous = [], []
    for i in ids:
        p = index.get(str(i))
        if p == "":
            ambiguous.append(i)
        paths.append(p or str(root / split / str(i)))  # a missing file is reported by the caller
    if ambiguous:
        raise ValueError(f"{csv}: ids {ambiguous[:5]} match more than one image file under {root / split}; "
                         "give a path column (e.g. img_path) that says which")
    return paths


def read_labels_table(root: Path, csv: Path, problems: list, id_col=None, label_col=None, path_col=None,
                      group_col=None) -> pd.DataFrame:
    """id, path, label (text) [, group_col] per row of a labels table; missing files and duplicate
    ids are listed in ``problems`` and left out."""
    if not csv.exists():
        raise FileNotFoundError(f"{csv}: no such labels table")
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    id_col = pick_column(df, id_col, ID_COLS, csv)
    path_col = pick_column(df, path_col, PATH_COLS, csv)
    label_col = pick_column(df, label_col, LABEL_COLS, csv)
    if label_col is None or (id_col is None and path_col is None):
        raise ValueError(f"{csv}: cannot tell the id/path and label columns among {list(df.columns)}; "
                         "name them with scan_args, e.g. {'id_col': ..., 'label_col': ...}")
    if group_col and group_col not in df.columns:
        raise ValueError(f"{csv}: no group column {group_col!r} (columns: {list(df.columns)})")
    empty = df[label_col].str.strip() == ""
    if empty.any():
        rows = (np.flatnonzero(empty.to_numpy())[:5] + 2).tolist()  # file lines: header is line 1
        raise ValueError(f"{csv}: column {label_col!r} is empty on lines {rows}; fill or drop those rows")
    if path_col:
        paths = [p if os.path.isabs(p) else str((root / p).resolve()) for p in df[path_col]]
    else:
        paths = find_images(root, "train", df[id_col], csv)
    out = pd.DataFrame({"id": df[id_col] if id_col else [Path(p).stem for p in paths],
                        "path": paths, "label": df[label_col].str.strip()})
    if group_col:
        out[group_col] = df[group_col].to_numpy()
    missing = np.array([not os.path.exists(p) for p in out["path"]], dtype=bool)
    for p in out.loc[missing, "path"]:
        problems.append({"split": "train", "path": p, "problem": f"listed in {csv.name} but missing"})
    out = out.loc[~missing]
    dup = out["id"].duplicated(keep="first")
    for i in out.loc[dup, "id"]:
        problems.append({"split": "train", "path": str(csv), "problem": f"duplicate id {i!r}; later rows dropped"})
    return out.loc[~dup].reset_index(drop=True)


def read_class_names(root: Path) -> tuple[Path, dict[str, str]] | None:
    """(file, {label value: class name}) from a class-names table beside the data (``meta.csv``-style:
    a column of label values and a column of names), or None when there is none."""
    for name in META_FILES:
        csv = root / name
        if not csv.exists():
            continue
        df = pd.read_csv(csv, dtype=str, keep_default_na=False)
        value_col = pick_column(df, None, ("target", "label", "class_id", "index", "id"), csv)
        name_col = pick_column(df, None, [c for c in NAME_COLS if c != value_col], csv)
        if value_col is None or name_col is None:
            raise ValueError(f"{csv}: a class-names table needs a label column (target/label/class_id) and a "
                             f"name column (class_name/name); it has {list(df.columns)}")
        if df[value_col].duplicated().any():
            raise ValueError(f"{csv}: label values {df.loc[df[value_col].duplicated(), value_col].tolist()[:5]} "
                             "appear twice")
        return csv, dict(zip(df[value_col].str.strip(), df[name_col]))
    return None


def submission_kind(sample: pd.DataFrame) -> str:
    """The submission a sample asks for: "label" (one column after the ID holding a label per row: text
    or whole numbers), "binary" (one column of non-integer numbers, e.g. 0.5: the probability of the
    positive class, whatever the column's name) or "probs" (a probability column per class)."""
    if sample.shape[1] != 2:
        return "probs"
    values = sample[sample.columns[1]]
    if not pd.api.types.is_numeric_dtype(values):
        return "label"
    return "label" if np.all(np.mod(values.to_numpy(dtype=np.float64), 1) == 0) else "binary"


POSITIVE_LABELS = ("1", "true", "yes", "y", "pos", "positive")  # the positive class of a two-class problem


def positive_class(classes: list[str], column: str, sample_path, positive: str | None = None) -> int:
    """Index of the class whose probability a binary submission's one column holds: ``positive`` when
    given, else the class named like the column (``is_dog`` does not count, ``dog`` does), else the one
    positive-sounding label of the two (1, true, yes, pos). Anything else is an error that says what to set."""
    if len(classes) != 2:
        raise ValueError(f"{sample_path}: its one probability column {column!r} fits a two-class competition; "
                         f"the training labels have {len(classes)} classes ({classes[:5]}); check the label column")
    low = [str(c).lower() for c in classes]
    if positive is not None:
        if str(positive).lower() not in low:
            raise ValueError(f"positive_class {positive!r} is not one of the classes {classes}")
        return low.index(str(positive).lower())
    if column.lower() in low:
        return low.index(column.lower())
    pos = [i for i, c in enumerate(low) if c in POSITIVE_LABELS]
    if len(pos) == 1:
        return pos[0]
    raise ValueError(f"{sample_path}: column {column!r} holds one probability per row, but which of the classes "
                     f"{classes} is it? Say so once with scan_args={{'positive_class': '{classes[1]}'}} (02's "
                     "parameter, or open_competition's)")


def sorted_labels(values) -> list[str]:
    """Label values in class order: numerically when all are integers, else as text."""
    values = sorted(set(values))
    if values and all(v.lstrip("-").isdigit() for v in values):
        values = sorted(values, key=int)
    return values


def read_sample_submission(root: Path) -> pd.DataFrame | None:
    p = root / "sample_submission.csv"
    if not p.exists():
        return None
    df = pd.read_csv(p, dtype={0: str})
    df.columns = [str(c) for c in df.columns]
    df[df.columns[0]] = df[df.columns[0]].astype(str)
    dup = df[df.columns[0]].duplicated()
    if dup.any():
        rows = (np.flatnonzero(dup.to_numpy())[:5] + 2).tolist()
        raise ValueError(f"{p}: duplicate IDs {df.loc[dup, df.columns[0]].tolist()[:5]} on lines {rows}; "
                         "each test image needs one row")
    return df


def resolve_classes(root: Path, work: Path, train: pd.DataFrame, sample: pd.DataFrame | None,
                 labels_csv: str | None, positive: str | None = None) -> dict:
    """The class identifiers, names, submission kind and label values (``Competition``).

    Class order: the sample's class columns; for a label submission the label values of the
    class-names table (``meta.csv``), else of the training labels (numerically when all are whole
    numbers). A binary submission (one probability column) also records ``positive``, the index of the
    class it holds (``positive_class``). Saved to ``classes.json`` on first use; later scans must agree,
    so an index never shifts.
    """
    kind = submission_kind(sample) if sample is not None else "probs"
    meta = read_class_names(root)
    where = root / (labels_csv or "train")
    if kind == "probs" and sample is not None:
        classes = list(sample.columns[1:])
        names = [meta[1].get(c, c) for c in classes] if meta else classes
    elif meta:
        classes, names = sorted_labels(meta[1]), None
        names = [meta[1][c] for c in classes]
        where = meta[0]
    else:
        classes = sorted_labels(train["label"])
        names = classes
    unknown = train.loc[~train["label"].isin(set(classes))]
    if len(unknown):
        src = "columns of sample_submission.csv" if kind == "probs" and sample is not None else f"labels of {where}"
        raise ValueError(f"{root / (labels_csv or 'train')}: labels {sorted(set(unknown['label']))[:10]} (e.g. "
                         f"{unknown['id'].tolist()[:3]}) are not {src}; check the label column or the class table")
    values, pos = None, None
    if kind == "binary":
        pos = positive_class(classes, str(sample.columns[1]), root / "sample_submission.csv", positive)
    if kind == "label":
        col = sample[sample.columns[1]]
        numeric = pd.api.types.is_numeric_dtype(col) and all(c.lstrip("-").isdigit() for c in classes)
        values = [int(c) for c in classes] if numeric else list(classes)
    path = work / "classes.json"
    if path.exists():
        saved = read_json(path)["classes"]
        if saved != classes:
            raise ValueError(f"{path}: saved class order differs from the data now "
                             f"({len(saved)} saved vs {len(classes)} found). Class indices must never "
                             "shift: restore the data, or delete classes.json, folds.csv and runs/ if "
                             "the change is intended")
    else:
        write_json(path, {"classes": classes, "index": {c: i for i, c in enumerate(classes)}, "names": names,
                          "submission": kind, "label_values": values, "positive": pos})
    return {"classes": classes, "names": names, "submission": kind, "label_values": values, "positive": pos}
