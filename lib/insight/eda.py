"""Exploratory analysis: the facts about a competition that decide everything after it.

This module reads the scan tables only (no image is decoded); the one pass over the files and what is
computed from its table are in their own modules:

    class_table, imbalance_ratio        counts, imbalance ratio, classes with fewer images than folds
    geometry_table                      width, height, aspect, file size (image headers, no decode)
    bad_files                           every file that could not be read, with the reason
    lib.insight.image_stats                     the one pass: per-image statistics and hashes (``image_stats``)
    lib.insight.shift                           train vs test per statistic (KS D) + adversarial AUC
    lib.insight.duplicates                      exact (md5) / near (phash) duplicates, label conflicts, leaks

Their plots (class counts, geometry, samples, shift, duplicate pairs) are in ``lib.insight.eda_plots``.
Findings are CSVs under ``<root>/eda/`` (image_stats, shift, duplicates, conflicts, bad_files), each
with an ``id`` column, written atomically, so training can exclude ids by naming the file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lib.core.io import write_csv
from lib.data.competition import Competition
from lib.data.images import IMAGE_EXTS

STATS = {  # per-image statistics of the small decode (size x size RGB, 0-255)
    "brightness": "mean luma",
    "contrast": "std of luma",
    "colourfulness": "Hasler-Suesstrunk colourfulness",
    "sharpness": "variance of the Laplacian of luma (low = blurry)",
    "noise": "Immerkaer noise sigma estimate of luma",
    "edge_ratio": "log(horizontal-edge / vertical-edge energy); flips sign under a 90-degree rotation",
    "top_bottom": "mean luma of top half minus bottom half; flips sign when upside down",
    "left_right": "mean luma of left half minus right half; flips sign when mirrored",
}
GEOMETRY = {"width": "pixels", "height": "pixels", "aspect": "width / height", "megapixels": "width*height/1e6",
            "kbytes": "file size in KB"}


def eda_dir(comp: Competition) -> Path:
    return Path(comp.work) / "eda"


def all_images(comp: Competition) -> pd.DataFrame:
    """Train and test in one table, with a ``split`` column (train first)."""
    return pd.concat([comp.train.assign(split="train"), comp.test.assign(split="test")], ignore_index=True)


# ----------------------------------------------------------------------------------------------
# classes and geometry (scan tables only)


def class_table(comp: Competition, n_folds: int = 5) -> pd.DataFrame:
    """One row per class in submission order: index, name, count, share (%), fewer_than_folds."""
    counts = comp.train["label"].value_counts()
    n = np.array([int(counts.get(c, 0)) for c in comp.classes])
    return pd.DataFrame({"index": range(len(comp.classes)), "name": comp.classes, "count": n,
                         "share": (100.0 * n / max(n.sum(), 1)).round(2), "fewer_than_folds": n < n_folds})


def imbalance_ratio(comp: Competition) -> float:
    """Largest class count / smallest (inf when a class has no image)."""
    n = class_table(comp)["count"]
    return float(n.max() / n.min()) if n.min() > 0 else float("inf")


def with_geometry(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` (scan columns width, height, bytes) with aspect, megapixels, kbytes and orientation."""
    w, h = df["width"].astype(float), df["height"].astype(float)
    aspect = w / h.where(h > 0)
    return df.assign(aspect=aspect, megapixels=w * h / 1e6, kbytes=df["bytes"] / 1024.0,
                     orientation=np.where((aspect - 1).abs() <= 0.02, "square",
                                          np.where(aspect > 1, "landscape", "portrait")))


def geometry_table(comp: Competition) -> pd.DataFrame:
    """Quantiles of width, height, aspect, megapixels and KB, and orientation shares, per split."""
    out = {}
    for split, df in (("train", comp.train), ("test", comp.test)):
        if len(df):
            g = with_geometry(df)
            d = g[list(GEOMETRY)].quantile([0, 0.05, 0.5, 0.95, 1]).T
            d.columns = ["min", "p5", "median", "p95", "max"]
            shares = g["orientation"].value_counts(normalize=True)
            for o in ("landscape", "portrait", "square"):
                d.loc[f"{o} share", "median"] = float(shares.get(o, 0.0))
            out[split] = d
    return pd.concat(out, axis=1).round(3)


# ----------------------------------------------------------------------------------------------
# bad files


def bad_files(comp: Competition, stats: pd.DataFrame | None = None, save: bool = True) -> pd.DataFrame:
    """Everything that could not be used: the scan's problems plus files the stats pass could not
    decode. Columns: split, id (file stem; "" for problems that are not one file), path, problem.
    Written to ``<root>/eda/bad_files.csv``."""
    p = comp.problems[["split", "path", "problem"]].copy()
    if stats is not None and len(stats):
        p = pd.concat([p, stats.loc[stats["problem"] != "", ["split", "path", "problem"]]], ignore_index=True)
    p.insert(1, "id", [Path(x).stem if Path(x).suffix.lower() in IMAGE_EXTS else "" for x in p["path"]])
    if stats is not None and len(stats):
        ids = dict(zip(stats["path"], stats["id"]))
        p["id"] = [ids.get(x, i) for x, i in zip(p["path"], p["id"])]
    if save:
        write_csv(eda_dir(comp) / "bad_files.csv", p)
    return p.reset_index(drop=True)
