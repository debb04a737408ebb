"""Open a competition folder: its images, classes and problems, always with the same settings.

A competition folder (``data/<name>/``) looks like what competitions ship::

    train/<class name>/<file>.jpg     a folder per class        (or train.csv: id/path + label)
    test/<file>.jpg                   test images
    test.csv                          ID, img_path               (optional: else test/ is listed)
    sample_submission.csv             ID + one column per class  (fixes the class order)

    comp = open_competition("data/cars")                                   # every notebook, every module
    comp = open_competition("data/docs", scan_args={"labels_csv": "labels.csv"})   # the first time only

Derived files are written beside it, once: ``classes.json`` (index <-> name, never shifts),
``scan_settings.json`` (how the folder is read: a labels table's name and columns, the group column;
given once, then every later ``open_competition`` reads it the same way), ``scan.csv`` (per-file
header facts, reused while files are unchanged), ``folds.csv`` (``lib.folds``), ``cache/``
(pre-resized images, ``lib.dataset``). Decoding lives in ``lib.images``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .images import IMAGE_EXTS, BadImageError, probe_images_cached
from .io import read_json, write_json
from .paths import resolve

ID_COLS = ("id", "ID", "Id", "image_id", "img_id", "filename", "file_name", "image")
PATH_COLS = ("img_path", "path", "filepath", "file_path", "image_path")
LABEL_COLS = ("label", "target", "class", "category", "class_name", "labels")


# ----------------------------------------------------------------------------------------------
# the competition


@dataclass
class Competition:
    """A scanned competition. Tables hold only usable images; everything else is in ``problems``.

    train: id, path, label (class name), target (class index), width, height, bytes [, group]
    test:  id, path, width, height, bytes   (in sample_submission order when it exists)
    problems: split, path, problem
    """
    root: Path
    classes: list[str]
    train: pd.DataFrame
    test: pd.DataFrame
    problems: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["split", "path", "problem"]))
    sample_submission: pd.DataFrame | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def summary(self) -> pd.DataFrame:
        counts = self.train["label"].value_counts()
        return pd.DataFrame({
            "what": ["classes", "train images", "test images", "problems", "images per class (min/median/max)"],
            "value": [self.num_classes, len(self.train), len(self.test), len(self.problems),
                      f"{counts.min()}/{int(counts.median())}/{counts.max()}" if len(counts) else "-"],
        })


def open_competition(data_dir, scan_args: dict | None = None, group_col: str | None = None,
                     verbose: bool = False) -> Competition:
    """The competition in ``data_dir`` (absolute, else relative to the repo root, else to the working
    directory), read with the settings stored in its ``scan_settings.json``.

    ``scan_args`` (labels_csv, id_col, label_col, path_col: see ``scan_competition``) and
    ``group_col`` are needed once, by whichever notebook opens the folder first; they are stored
    after a successful scan, and later calls without them read the folder the same way. Settings
    that contradict the stored ones are an error (delete ``scan_settings.json`` to change them).
    """
    root = resolve(data_dir)
    if not root.is_dir() and Path(data_dir).is_dir():
        root = Path(data_dir).resolve()
    given = {**(scan_args or {}), **({"group_col": group_col} if group_col else {})}
    store = root / "scan_settings.json"
    saved = read_json(store) if store.exists() else None
    if saved is not None and given and given != saved:
        raise ValueError(f"{store} says to read this folder with {saved}, but {given} was asked for; pass "
                         f"the stored settings (or none), or delete {store.name} to scan it another way")
    settings = saved if saved is not None else given
    comp = scan_competition(root, verbose=verbose, **settings)
    if saved is None:
        write_json(store, settings)
    return comp


def scan_competition(root, labels_csv: str | None = None, id_col: str | None = None,
                     label_col: str | None = None, path_col: str | None = None,
                     group_col: str | None = None, on_bad: str = "report", verify: bool = True,
                     workers: int | None = None, verbose: bool = True) -> Competition:
    """Read a competition folder (layout in the module docstring) into a ``Competition``.

    ``labels_csv`` (relative to root) switches from folder-per-class to a labels table; its id,
    path and label columns are detected unless named. ``on_bad`` = "report" keeps going and lists
    every unusable file in ``problems`` (printed when ``verbose``); "raise" stops on the first scan
    that finds any. Per-file facts are cached in ``scan.csv`` and re-read only for changed files.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such competition folder; build the demo with "
                                "`python -m lib.demo` or point data_dir at your competition")
    problems: list[dict] = []
    sample = _read_sample_submission(root)
    has_class_dirs = (root / "train").is_dir() and any(d.is_dir() for d in (root / "train").iterdir())
    if labels_csv is None and not has_class_dirs and (root / "train.csv").exists():
        labels_csv = "train.csv"
    if labels_csv:
        train = _train_from_csv(root, root / labels_csv, id_col, label_col, path_col, group_col, problems)
    else:
        train = _train_from_folders(root / "train", problems)
    if train.empty:
        raise ValueError(f"{root}: no training images found (train/<class>/*.jpg or a train.csv with "
                         "id/path and label columns); see README 'Bring your own competition'")
    test = _test_table(root, sample, problems)

    classes = _class_order(root, train, sample)
    unknown = sorted(set(train["label"]) - set(classes))
    if unknown:
        raise ValueError(f"{root}: labels {unknown[:10]} are not columns of sample_submission.csv; "
                         "check the label column or the sample submission")
    train["target"] = train["label"].map({c: i for i, c in enumerate(classes)}).astype("int64")

    facts = probe_images_cached(root / "scan.csv", pd.concat([train["path"], test["path"]]).tolist(), verify, workers)
    facts = facts[["width", "height", "bytes", "problem"]]
    train, test = train.join(facts, on="path"), test.join(facts, on="path")
    for name, df in (("train", train), ("test", test)):
        bad = df["problem"] != ""
        problems += [{"split": name, "path": p, "problem": r}
                     for p, r in zip(df.loc[bad, "path"], df.loc[bad, "problem"])]
    keep = ["id", "path", "label", "target", "width", "height", "bytes"] + ([group_col] if group_col else [])
    train = train.loc[train["problem"] == "", keep].reset_index(drop=True)
    test = test.loc[test["problem"] == "", ["id", "path", "width", "height", "bytes"]].reset_index(drop=True)
    for df in (train, test):
        df[["width", "height", "bytes"]] = df[["width", "height", "bytes"]].astype("int64")

    counts = train["label"].value_counts()
    for c in classes:
        n = int(counts.get(c, 0))
        if n <= 1:
            problems.append({"split": "train", "path": str(root / "train" / c),
                             "problem": f"class {c!r} has {n} usable image{'s' if n != 1 else ''}"})
    comp = Competition(root, classes, train, test, pd.DataFrame(problems, columns=["split", "path", "problem"]), sample)
    if verbose:
        print(f"{root}: {len(classes)} classes, {len(train)} train and {len(test)} test images, "
              f"{len(comp.problems)} problem(s)")
        if len(comp.problems):
            with pd.option_context("display.max_colwidth", 200, "display.width", 250):
                print(comp.problems.to_string(max_rows=40))
    if on_bad == "raise" and len(comp.problems):
        raise BadImageError(f"{root}: {len(comp.problems)} problem(s), first: {comp.problems.iloc[0].to_dict()}; "
                            "fix or remove those files, or scan with on_bad='report' to go on without them")
    return comp


def _read_sample_submission(root: Path) -> pd.DataFrame | None:
    p = root / "sample_submission.csv"
    if not p.exists():
        return None
    df = pd.read_csv(p, dtype={0: str})
    df.columns = [str(c) for c in df.columns]
    df[df.columns[0]] = df[df.columns[0]].astype(str)
    return df


def _list_images(folder: Path, split: str, problems: list) -> list[Path]:
    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS:
            out.append(p)
        elif p.is_file():
            problems.append({"split": split, "path": str(p),
                             "problem": f"not an image extension ({p.suffix or 'none'}); ignored"})
    return out


def _train_from_folders(train_dir: Path, problems: list) -> pd.DataFrame:
    if not train_dir.is_dir():
        raise FileNotFoundError(f"{train_dir}: no train/ folder of class folders and no train.csv; "
                                "see README 'Bring your own competition' for the layouts read")
    rows = []
    for cls_dir in sorted(d for d in train_dir.iterdir() if d.is_dir() and not d.name.startswith(".")):
        files = _list_images(cls_dir, "train", problems)
        if not files:
            problems.append({"split": "train", "path": str(cls_dir), "problem": "empty class folder"})
        rows += [{"id": f.stem, "path": str(f.resolve()), "label": cls_dir.name} for f in files]
    df = pd.DataFrame(rows, columns=["id", "path", "label"])
    dup = df["id"].duplicated(keep=False)
    if dup.any():  # same file stem in two class folders: make ids unique by folder, and say so
        for p in df.loc[dup, "path"]:
            problems.append({"split": "train", "path": p,
                             "problem": "duplicate id (same file name in another class folder)"})
        df.loc[dup, "id"] = df.loc[dup, "label"] + "/" + df.loc[dup, "id"]
    return df


def _pick(df: pd.DataFrame, given: str | None, candidates, what: str, csv: Path) -> str | None:
    if given:
        if given not in df.columns:
            raise ValueError(f"{csv}: no column {given!r} (columns: {list(df.columns)})")
        return given
    return next((c for c in candidates if c in df.columns), None)


def _train_from_csv(root, csv: Path, id_col, label_col, path_col, group_col, problems) -> pd.DataFrame:
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    id_col = _pick(df, id_col, ID_COLS, "id", csv)
    path_col = _pick(df, path_col, PATH_COLS, "path", csv)
    label_col = _pick(df, label_col, LABEL_COLS, "label", csv)
    if label_col is None or (id_col is None and path_col is None):
        raise ValueError(f"{csv}: cannot tell the id/path and label columns among {list(df.columns)}; "
                         "pass id_col=, path_col= and label_col=")
    if group_col and group_col not in df.columns:
        raise ValueError(f"{csv}: no group column {group_col!r}")
    if path_col:
        paths = [str((root / p).resolve()) if not os.path.isabs(p) else p for p in df[path_col]]
    else:
        paths = [_find_file(root / "train", i) for i in df[id_col]]
    out = pd.DataFrame({"id": df[id_col] if id_col else [Path(p).stem for p in paths],
                        "path": paths, "label": df[label_col].astype(str)})
    if group_col:
        out[group_col] = df[group_col].to_numpy()
    missing = [not os.path.exists(p) for p in out["path"]]
    for p in out.loc[missing, "path"]:
        problems.append({"split": "train", "path": p, "problem": f"listed in {csv.name} but missing"})
    out = out.loc[~np.array(missing, dtype=bool)]
    dup = out["id"].duplicated(keep="first")
    for i in out.loc[dup, "id"]:
        problems.append({"split": "train", "path": str(csv), "problem": f"duplicate id {i!r}; later rows dropped"})
    return out.loc[~dup].reset_index(drop=True)


def _find_file(folder: Path, stem: str) -> str:
    if (folder / stem).exists():
        return str(folder / stem)
    for ext in IMAGE_EXTS:
        for e in (ext, ext.upper()):
            if (folder / f"{stem}{e}").exists():
                return str(folder / f"{stem}{e}")
    return str(folder / stem)


def _test_table(root: Path, sample: pd.DataFrame | None, problems: list) -> pd.DataFrame:
    csv = root / "test.csv"
    if csv.exists():
        df = pd.read_csv(csv, dtype=str, keep_default_na=False)
        id_col = _pick(df, None, ID_COLS, "id", csv) or df.columns[0]
        path_col = _pick(df, None, PATH_COLS, "path", csv)
        paths = ([str((root / p).resolve()) for p in df[path_col]] if path_col
                 else [_find_file(root / "test", i) for i in df[id_col]])
        test = pd.DataFrame({"id": df[id_col].astype(str), "path": paths})
    elif (root / "test").is_dir():
        files = _list_images(root / "test", "test", problems)
        test = pd.DataFrame({"id": [f.stem for f in files], "path": [str(f.resolve()) for f in files]})
    else:
        test = pd.DataFrame(columns=["id", "path"])
    missing = np.array([not os.path.exists(p) for p in test["path"]], dtype=bool)
    for p in test.loc[missing, "path"]:
        problems.append({"split": "test", "path": p, "problem": "listed in test.csv but missing"})
    test = test.loc[~missing]
    for i in test.loc[test["id"].duplicated(), "id"]:
        problems.append({"split": "test", "path": str(csv), "problem": f"duplicate test id {i!r}"})
    test = test.drop_duplicates("id")
    if sample is not None:
        sid = sample.columns[0]
        in_sample = test["id"].isin(set(sample[sid]))
        for i in test.loc[~in_sample, "id"]:
            problems.append({"split": "test", "path": str(root / "sample_submission.csv"),
                             "problem": f"test id {i!r} is not in sample_submission.csv"})
        not_in_test = sorted(set(sample[sid]) - set(test["id"]))
        for i in not_in_test[:50]:
            problems.append({"split": "test", "path": str(root / "sample_submission.csv"),
                             "problem": f"sample_submission id {i!r} has no usable test image"})
        order = {v: k for k, v in enumerate(sample[sid])}
        test = test.assign(_o=test["id"].map(order)).sort_values("_o", na_position="last").drop(columns="_o")
    return test.reset_index(drop=True)


def _class_order(root: Path, train: pd.DataFrame, sample: pd.DataFrame | None) -> list[str]:
    """Class order = sample_submission's columns, else sorted names (numerically when all are ints).

    Saved to ``classes.json`` on first use; later scans must agree with it, so an index never shifts.
    """
    if sample is not None:
        classes = list(sample.columns[1:])
    else:
        names = sorted(set(train["label"]))
        if names and all(n.lstrip("-").isdigit() for n in names):
            names = sorted(names, key=int)
        classes = names
    path = root / "classes.json"
    if path.exists():
        saved = read_json(path)["classes"]
        if saved != classes:
            raise ValueError(f"{path}: saved class order differs from the data now "
                             f"({len(saved)} saved vs {len(classes)} found). Class indices must never "
                             "shift: restore the data, or delete classes.json, folds.csv and runs/ if "
                             "the change is intended")
    else:
        write_json(path, {"classes": classes, "index": {c: i for i, c in enumerate(classes)}})
    return classes
