"""Open a competition folder: its images, classes and problems, always with the same settings.

A competition folder (``data/<name>/``) looks like what competitions ship::

    train/<class name>/<file>.jpg     a folder per class     (or a labels table, e.g. train.csv with
                                                             an id or path column and a label column)
    test/<file>.jpg                   test images (flat or nested)
    test.csv                          ID, img_path            (optional: else the sample's IDs are looked up)
    sample_submission.csv             ID + one column per class (probabilities), or ID + one label column
    meta.csv                          label value -> class name (optional; names for plots)

    comp = open_competition("data/cars")                                   # every notebook, every module
    comp = open_competition("data/docs", scan_args={"labels_csv": "labels.csv"})   # the first time only
    test = open_test_set("data/docs", class_table)                          # a hidden test set (05)
    held = open_labelled("data/holdout", class_table)                       # labelled images to score runs on

What the kit derives goes to the competition's work folder (``lib.core.paths.work_dir``: the folder itself
when it can be written, else a folder of the repo's ``work/``): ``classes.json`` (index <-> class,
never shifts), ``scan_settings.json`` (how the folder is read: a labels table's name and columns, the
group column; given once, then every later ``open_competition`` reads it the same way), ``scan.csv``
(per-file header facts), ``folds.csv`` (``lib.data.folds``), ``cache/`` (``lib.data.dataset``), ``eda/``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lib.core.io import read_json, write_json
from lib.core.paths import resolve, work_dir
from lib.data.images import IMAGE_EXTS, BadImageError, probe_images_cached
from lib.data.labels import (
    ID_COLS,
    PATH_COLS,
    find_images,
    pick_column,
    read_labels_table,
    read_sample_submission,
    resolve_classes,
    submission_kind,
)

# ----------------------------------------------------------------------------------------------
# the competition


@dataclass
class Competition:
    """A scanned competition. Tables hold only usable images; everything else is in ``problems``.

    train: id, path, label (class), target (class index), width, height, bytes [, group]
    test:  id, path, width, height, bytes   (in sample_submission order when it exists)
    problems: split, path, problem
    classes: the class identifiers (prediction columns): the sample's class columns, or the label
    values as text for a label submission; names: what plots write (a class-names table's names, else
    the classes); submission: "probs", "label" or "binary"; label_values: what a label submission writes
    per class, in the sample's dtype; positive: the class index whose probability a binary submission's
    one column holds. work: where derived files go (``lib.core.paths.work_dir``).
    """
    root: Path
    classes: list[str]
    train: pd.DataFrame
    test: pd.DataFrame
    problems: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["split", "path", "problem"]))
    sample_submission: pd.DataFrame | None = None
    work: Path | None = None
    names: list[str] | None = None
    submission: str = "probs"
    label_values: list | None = None
    positive: int | None = None

    def __post_init__(self):
        self.work = Path(self.work or self.root)
        self.names = list(self.names or self.classes)

    def class_table(self) -> dict:
        """What a trained run needs to predict this competition again: classes, names, submission
        kind, label values, positive class (saved with each run and with the blend)."""
        return {"classes": self.classes, "names": self.names, "submission": self.submission,
                "label_values": self.label_values, "positive": self.positive}

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def unreadable_test_ids(self) -> list:
        """Sample IDs whose test image could not be read (the scan dropped them; ``problems`` says why).
        The sample and the test images match one for one, so every sample ID missing from ``test`` is one."""
        if self.sample_submission is None:
            return []
        have = set(self.test["id"].astype(str))
        return [i for i in self.sample_submission.iloc[:, 0].astype(str) if i not in have]

    def class_prior(self) -> np.ndarray:
        """[C] the training labels' class frequencies (uniform when there are none, e.g. a test-only folder)."""
        if not len(self.train):
            return np.full(self.num_classes, 1.0 / self.num_classes)
        counts = np.bincount(self.train["target"].to_numpy(np.int64), minlength=self.num_classes)
        return counts / counts.sum()

    def summary(self) -> pd.DataFrame:
        counts = self.train["label"].value_counts()
        return pd.DataFrame({
            "what": ["classes", "train images", "test images", "problems", "images per class (min/median/max)"],
            "value": [self.num_classes, len(self.train), len(self.test), len(self.problems),
                      f"{counts.min()}/{int(counts.median())}/{counts.max()}" if len(counts) else "-"],
        })


def open_competition(data_dir, scan_args: dict | None = None, group_col: str | None = None,
                     verbose: bool = False, work: str | None = None) -> Competition:
    """The competition in ``data_dir`` (absolute, else relative to the repo root, else to the working
    directory), read with the settings stored in its ``scan_settings.json``.

    ``scan_args`` (labels_csv, id_col, label_col, path_col, positive_class: see ``scan_competition``) and
    ``group_col`` are needed once, by whichever notebook opens the folder first; they are stored
    after a successful scan, and later calls without them read the folder the same way. Settings
    that contradict the stored ones are an error (delete ``scan_settings.json`` to change them).
    ``work`` overrides where derived files go (``lib.core.paths.work_dir``).
    """
    root = _root(data_dir)
    given = {**(scan_args or {}), **({"group_col": group_col} if group_col else {})}
    work = work_dir(root, work)
    store = work / "scan_settings.json"
    saved = read_json(store) if store.exists() else None
    if saved is not None and given and given != saved:
        raise ValueError(f"{store} says to read this folder with {saved}, but {given} was asked for; pass "
                         f"the stored settings (or none), or delete {store.name} to scan it another way")
    settings = saved if saved is not None else given
    comp = scan_competition(root, verbose=verbose, work=work, **settings)
    if saved is None:
        write_json(store, settings)
    return comp


def work_folder(data_dir) -> Path:
    """Where the kit writes what it derives from the competition in ``data_dir`` (folds.csv, caches...),
    found as ``open_competition`` finds it, without reading the competition (``lib.core.paths.work_dir``)."""
    return work_dir(_root(data_dir))


def open_test_set(data_dir, class_table: dict, work: str | None = None, verbose: bool = False) -> Competition:
    """Only the test side of a competition folder (its sample submission and test images, e.g. the
    hidden set a code competition swaps in), with the classes of the runs that will predict it
    (``Competition.class_table``). No training image, fold or class file is read."""
    root = _root(data_dir)
    sample = read_sample_submission(root)
    if sample is None:
        raise FileNotFoundError(f"{root}/sample_submission.csv is missing: it fixes the submission's IDs and columns")
    kind = submission_kind(sample)
    if kind != class_table["submission"] or (kind == "probs" and list(sample.columns[1:]) != class_table["classes"]):
        raise ValueError(f"{root}/sample_submission.csv does not fit the trained runs: they predict "
                         f"{class_table['submission']} submissions of classes {class_table['classes'][:5]}..., "
                         f"the sample has columns {list(sample.columns)[:6]}")
    problems: list[dict] = []
    test = _test_table(root, sample, problems)
    work = work_dir(root, work)
    test = _with_facts(test, work, "test", True, None, problems)
    comp = Competition(root, list(class_table["classes"]), pd.DataFrame(columns=["id", "path", "label", "target"]),
                       test, pd.DataFrame(problems, columns=["split", "path", "problem"]), sample, work,
                       class_table.get("names"), kind, class_table.get("label_values"), class_table.get("positive"))
    if verbose:
        print(f"{root}: {len(test)} test images for {len(comp.classes)} classes, {len(comp.problems)} problem(s)")
    return comp


def open_labelled(data_dir, class_table: dict, work: str | None = None) -> Competition:
    """A folder of labelled images to score trained runs on (``lib.ops.validate``), in the classes of the
    runs (``Competition.class_table``): its ``train`` table holds the images, ``test`` is empty.

    Layouts: a competition folder (``train/<class>/`` folders, or a labels table, read with the
    settings its ``scan_settings.json`` stores, else ``train.csv``), or an image folder as timm's
    ``validate.py`` reads it, ``<class>/<file>`` (subfolders without an image file, e.g. the kit's
    ``cache/``, are not classes). A label the runs do not predict is an error naming it; images that
    cannot be read are listed in ``problems``, not in ``train``. Nothing is written but the per-file
    facts (``scan.csv``) of the work folder (``lib.core.paths.work_dir``)."""
    root = _root(data_dir)
    work = work_dir(root, work)
    problems: list[dict] = []
    store = work / "scan_settings.json"
    settings = read_json(store) if store.exists() else {}
    labels_csv = settings.get("labels_csv")
    class_dirs = (root / "train").is_dir() and any(d.is_dir() for d in (root / "train").iterdir())
    if labels_csv is None and not class_dirs and (root / "train.csv").exists():
        labels_csv = "train.csv"
    if labels_csv:
        train = read_labels_table(root, root / labels_csv, problems, settings.get("id_col"),
                                  settings.get("label_col"), settings.get("path_col"))
    elif class_dirs:
        train = _train_from_folders(root / "train", problems)
    else:  # <class>/<file>: folders holding at least one image file
        rows = []
        for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if any(f.is_file() and f.suffix.lower() in IMAGE_EXTS for f in d.iterdir()):
                rows += [{"id": f.stem, "path": str(f.resolve()), "label": d.name}
                         for f in _list_images(d, "train", problems)]  # other files: named in problems
        train = pd.DataFrame(rows, columns=["id", "path", "label"])
        dup = train["id"].duplicated(keep=False)
        train.loc[dup, "id"] = train.loc[dup, "label"] + "/" + train.loc[dup, "id"]
    if train.empty:
        raise ValueError(f"{root}: no labelled images (a folder per class, <class>/<file>, or a competition "
                         "folder's train/<class>/ or train.csv)")
    classes = list(class_table["classes"])
    unknown = sorted(set(train["label"]) - set(classes))
    if unknown:
        raise ValueError(f"{root}: labels {unknown[:10]} are not classes the runs predict ({classes[:10]}"
                         f"{'...' if len(classes) > 10 else ''}); name the class folders (or label values) as "
                         "the competition they trained on does")
    train["target"] = train["label"].map({c: i for i, c in enumerate(classes)}).astype("int64")
    train = _with_facts(train, work, "train", True, None, problems)
    return Competition(root, classes, train, pd.DataFrame(columns=["id", "path"]),
                       pd.DataFrame(problems, columns=["split", "path", "problem"]), None, work,
                       class_table.get("names"), class_table.get("submission", "probs"),
                       class_table.get("label_values"), class_table.get("positive"))


def _root(data_dir) -> Path:
    root = resolve(data_dir)
    if not root.is_dir() and Path(data_dir).is_dir():
        root = Path(data_dir).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such competition folder; build the demo with "
                                "`python -m lib.ops.demo` or point data_dir at your competition")
    return root


def scan_competition(root, labels_csv: str | None = None, id_col: str | None = None,
                     label_col: str | None = None, path_col: str | None = None,
                     group_col: str | None = None, on_bad: str = "report", verify: bool = True,
                     workers: int | None = None, verbose: bool = True, work: Path | None = None,
                     positive_class: str | None = None) -> Competition:
    """Read a competition folder (layout in the module docstring) into a ``Competition``.

    ``labels_csv`` (relative to root) switches from folder-per-class to a labels table (``train.csv``
    is found without it); its id, path and label columns are detected unless named. ``on_bad`` =
    "report" keeps going and lists every unusable file in ``problems`` (printed when ``verbose``);
    "raise" stops on the first scan that finds any. A sample submission that does not match the test
    images (IDs without an image, images without an ID, duplicate IDs) or labels outside the class
    table are errors that name the file and the first rows. ``positive_class``: the class a binary
    submission's one column holds, where its name does not say (``lib.data.labels.positive_class``).
    Per-file facts are cached in
    ``scan.csv`` of the work folder (``work``, default ``lib.core.paths.work_dir(root)``).
    """
    root = _root(root)
    work = Path(work) if work else work_dir(root)
    problems: list[dict] = []
    sample = read_sample_submission(root)
    has_class_dirs = (root / "train").is_dir() and any(d.is_dir() for d in (root / "train").iterdir())
    if labels_csv is None and not has_class_dirs and (root / "train.csv").exists():
        labels_csv = "train.csv"
    if labels_csv:
        train = read_labels_table(root, root / labels_csv, problems, id_col, label_col, path_col, group_col)
    else:
        train = _train_from_folders(root / "train", problems)
    if train.empty:
        raise ValueError(f"{root}: no training images found (train/<class>/*.jpg or a train.csv with "
                         "id/path and label columns); see README 'Bring your own competition'")
    test = _test_table(root, sample, problems)
    table = resolve_classes(root, work, train, sample, labels_csv, positive_class)
    classes = table["classes"]
    train["target"] = train["label"].map({c: i for i, c in enumerate(classes)}).astype("int64")

    train = _with_facts(train, work, "train", verify, workers, problems)
    test = _with_facts(test, work, "test", verify, workers, problems)
    if group_col:
        train = train[[c for c in train.columns if c != group_col] + [group_col]]
    counts = train["label"].value_counts()
    for c in classes:
        n = int(counts.get(c, 0))
        if n <= 1:
            problems.append({"split": "train", "path": str(root / "train" / c),
                             "problem": f"class {c!r} has {n} usable image{'s' if n != 1 else ''}"})
    comp = Competition(root, classes, train, test, pd.DataFrame(problems, columns=["split", "path", "problem"]),
                       sample, work, table["names"], table["submission"], table["label_values"], table["positive"])
    if verbose:
        print(f"{root}: {len(classes)} classes, {len(train)} train and {len(test)} test images, "
              f"{len(comp.problems)} problem(s)" + (f"; derived files in {work}" if work != root else ""))
        if len(comp.problems):
            with pd.option_context("display.max_colwidth", 200, "display.width", 250):
                print(comp.problems.to_string(max_rows=40))
    if on_bad == "raise" and len(comp.problems):
        raise BadImageError(f"{root}: {len(comp.problems)} problem(s), first: {comp.problems.iloc[0].to_dict()}; "
                            "fix or remove those files, or scan with on_bad='report' to go on without them")
    return comp


def _with_facts(df: pd.DataFrame, work: Path, split: str, verify: bool, workers, problems: list) -> pd.DataFrame:
    """``df`` with width, height, bytes from the file headers (cached in scan.csv); unreadable files
    go to ``problems`` and out of the table."""
    facts = probe_images_cached(work / "scan.csv", df["path"].tolist(), verify, workers)
    df = df.join(facts[["width", "height", "bytes", "problem"]], on="path")
    bad = df["problem"] != ""
    problems += [{"split": split, "path": p, "problem": r} for p, r in zip(df.loc[bad, "path"], df.loc[bad, "problem"])]
    df = df.loc[~bad].drop(columns="problem").reset_index(drop=True)
    df[["width", "height", "bytes"]] = df[["width", "height", "bytes"]].astype("int64")
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


def _test_table(root: Path, sample: pd.DataFrame | None, problems: list) -> pd.DataFrame:
    """id, path of every test image, in the sample's row order. Test images are listed by test.csv,
    else looked up by the sample's IDs (with or without extension, at any depth of test/), else
    listed from test/. The sample and the images must match one for one."""
    csv = root / "test.csv"
    sample_csv = root / "sample_submission.csv"
    if csv.exists():
        df = pd.read_csv(csv, dtype=str, keep_default_na=False)
        id_col = pick_column(df, None, ID_COLS, csv) or df.columns[0]
        path_col = pick_column(df, None, PATH_COLS, csv)
        paths = ([str((root / p).resolve()) for p in df[path_col]] if path_col
                 else find_images(root, "test", df[id_col], csv))
        test = pd.DataFrame({"id": df[id_col].astype(str), "path": paths})
        listed = csv
    elif sample is not None:
        ids = sample[sample.columns[0]]
        test = pd.DataFrame({"id": ids.to_numpy(), "path": find_images(root, "test", ids, sample_csv)})
        listed = sample_csv
        known = set(test["path"])
        extra = [str(p) for p in sorted((root / "test").rglob("*"))
                 if p.is_file() and p.suffix.lower() in IMAGE_EXTS and str(p.resolve()) not in known]
        if extra:
            raise ValueError(f"{sample_csv}: {len(extra)} test image(s) have no row, e.g. {extra[:3]}; the "
                             "sample submission must list every test image (or remove the stray files)")
    elif (root / "test").is_dir():
        files = _list_images(root / "test", "test", problems)
        test = pd.DataFrame({"id": [f.stem for f in files], "path": [str(f.resolve()) for f in files]})
        listed = root / "test"
    else:
        return pd.DataFrame(columns=["id", "path"])
    dup = test["id"].duplicated()
    if dup.any():
        raise ValueError(f"{listed}: duplicate test ids {test.loc[dup, 'id'].tolist()[:5]}")
    missing = test.loc[[not os.path.exists(p) for p in test["path"]]]
    if len(missing):
        raise ValueError(f"{listed}: {len(missing)} test id(s) have no image file, first "
                         f"{missing['id'].tolist()[:5]} (looked for {missing['path'].tolist()[:2]}); "
                         "restore the files or fix the IDs")
    if sample is not None:
        sid = sample[sample.columns[0]]
        extra, absent = sorted(set(test["id"]) - set(sid)), sorted(set(sid) - set(test["id"]))
        if extra or absent:
            raise ValueError(f"{sample_csv} and {listed} disagree: test ids without a sample row "
                             f"{extra[:5]}, sample IDs without a test image {absent[:5]}")
        order = {v: k for k, v in enumerate(sid)}
        test = test.assign(_o=test["id"].map(order)).sort_values("_o").drop(columns="_o")
    return test.reset_index(drop=True)
