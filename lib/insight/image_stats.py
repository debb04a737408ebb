"""The one pass over the files of a competition: per-image statistics and hashes.

``image_stats`` reads and decodes each image once, at a small scale, in parallel, and caches the rows
in ``<root>/eda/image_stats.csv`` so a rerun is instant; ``lib.insight.shift`` and ``lib.insight.duplicates`` read
its table (``lib.insight.eda.STATS`` names the statistics).
"""
from __future__ import annotations

import hashlib
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from lib.core.device import pool_workers
from lib.core.io import file_signature, write_csv
from lib.data.competition import Competition
from lib.data.images import BadImageError, read_image
from lib.insight.eda import STATS, all_images, eda_dir, with_geometry

_ROWS = ["id", "split", "label", "target", "path", "width", "height", "bytes"]  # scan columns of a stats row
_TEXT = ["path", "problem", "md5", "phash", "phash256", "phash_dihedral", "phash256_dihedral"]
_CACHE = _TEXT + ["file_bytes", "mtime_ns", "decode_size"] + list(STATS)
_DIHEDRAL = (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270,
             Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM, Image.Transpose.TRANSPOSE,
             Image.Transpose.TRANSVERSE)


def _stats_of(rgb: np.ndarray) -> dict:
    a = rgb.astype(np.float32)
    g = a @ np.array([0.299, 0.587, 0.114], np.float32)
    rg, yb = a[..., 0] - a[..., 1], 0.5 * (a[..., 0] + a[..., 1]) - a[..., 2]
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4 * g[1:-1, 1:-1]
    m = g[:-2, :-2] + g[:-2, 2:] + g[2:, :-2] + g[2:, 2:] - 2 * (g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2]
                                                                 + g[1:-1, 2:]) + 4 * g[1:-1, 1:-1]
    dy, dx = np.abs(np.diff(g, axis=0)).mean(), np.abs(np.diff(g, axis=1)).mean()
    h, w = g.shape
    return {"brightness": g.mean(), "contrast": g.std(),
            "colourfulness": np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()),
            "sharpness": lap.var(), "noise": np.sqrt(np.pi / 2) * np.abs(m).mean() / 6,
            "edge_ratio": np.log((dy + 1e-3) / (dx + 1e-3)),
            "top_bottom": g[: h // 2].mean() - g[h - h // 2:].mean(),
            "left_right": g[:, : w // 2].mean() - g[:, w - w // 2:].mean()}


def stats_one(path: str, size: int = 64, dihedral: bool = False) -> dict:
    """Read ``path`` once: md5 of its bytes; decode at ~``size`` px (EXIF applied), resize to
    ``size x size``; ``STATS`` of that; ``imagehash.phash`` at 64 bits (16 hex digits, for the search)
    and 256 bits (64 hex digits, to confirm a match) and, with ``dihedral``, both hashes of its 7
    rotations/flips (space separated). ``problem`` says why an image could not be read."""
    row = dict.fromkeys(_TEXT, "") | {"path": path}
    try:
        size_bytes, mtime_ns = file_signature(path)
        if size_bytes < 0:
            raise FileNotFoundError(path)
        row.update(file_bytes=size_bytes, mtime_ns=mtime_ns, decode_size=size)
        with open(path, "rb") as f:
            row["md5"] = hashlib.file_digest(f, "md5").hexdigest()
        rgb = read_image(path, size=size)  # the bytes are in the OS page cache by now
    except BadImageError as e:
        row["problem"] = str(e).replace(f"{path}: ", "")
        return row
    except OSError as e:
        row["problem"] = f"cannot read: {type(e).__name__}: {e}"
        return row
    im = Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR)
    row.update({k: float(v) for k, v in _stats_of(np.asarray(im)).items()})
    row["phash"], row["phash256"] = str(imagehash.phash(im)), str(imagehash.phash(im, hash_size=16))
    if dihedral:
        ims = [im.transpose(t) for t in _DIHEDRAL]
        row["phash_dihedral"] = " ".join(str(imagehash.phash(x)) for x in ims)
        row["phash256_dihedral"] = " ".join(str(imagehash.phash(x, hash_size=16)) for x in ims)
    return row


def select(df: pd.DataFrame, max_images: int | None, seed: int) -> pd.DataFrame:
    """``df``, or ``max_images`` of its rows drawn at random (``seed``), in their order."""
    if max_images is None or len(df) <= max_images:
        return df
    return df.sample(max_images, random_state=seed).sort_index()


def image_stats(comp: Competition, size: int = 64, max_images: int | None = None, workers: int | None = None,
                seed: int = 0, chunk: int = 128) -> pd.DataFrame:
    """Per-image statistics and hashes of train and test (at most ``max_images`` of each, drawn at random).

    One row per image: id, split, label, target, path, width, height, bytes, aspect, megapixels,
    kbytes, orientation, md5, phash, phash256 and the same hashes of its 7 rotations/flips
    (phash_dihedral, phash256_dihedral: a flipped copy is a duplicate too), ``STATS``, problem ("" when fine).
    Files are processed in parallel (``workers`` processes, default min(8, cores)) in chunks with a
    progress bar; rows are cached in ``<root>/eda/image_stats.csv`` by path, size and mtime, so only
    new or changed files are read again.
    """
    tables = [select(comp.train, max_images, seed).assign(split="train"),
              select(comp.test, max_images, seed).assign(split="test")]
    want = pd.concat([t for t in tables if len(t)], ignore_index=True)
    want = want.reindex(columns=_ROWS)
    csv = eda_dir(comp) / "image_stats.csv"
    cache = _read_cache(csv)
    every = pd.Series(True, index=want.index)  # dihedral hashes for every image
    stale = _stale(cache, want["path"], every, size)
    todo = want.loc[stale, "path"].tolist()
    if todo:
        rows = _run_parallel(todo, size, [True] * len(todo), workers, chunk)
        new = pd.DataFrame(rows).reindex(columns=_CACHE).set_index("path")
        cache = pd.concat([cache.drop(index=new.index, errors="ignore"), new]) if len(cache) else new
        every = all_images(comp).reindex(columns=_ROWS)
        write_csv(csv, with_geometry(every).merge(cache.reset_index(), on="path", how="inner"))
    out = with_geometry(want).merge(cache.reset_index(), on="path", how="left")
    out["target"] = out["target"].astype("Int64")
    return out.drop(columns=["file_bytes", "mtime_ns", "decode_size"])


def _read_cache(csv: Path) -> pd.DataFrame:
    if not csv.exists():
        return pd.DataFrame(columns=_CACHE).set_index("path")
    df = pd.read_csv(csv, usecols=lambda c: c in _CACHE, dtype={c: str for c in _TEXT},
                     keep_default_na=False, na_values={c: [""] for c in _CACHE if c not in _TEXT})
    df = df.reindex(columns=_CACHE)
    df[_TEXT] = df[_TEXT].astype(object).fillna("").astype(str)
    return df.drop_duplicates("path", keep="last").set_index("path")


def _stale(cache: pd.DataFrame, paths: pd.Series, dihedral: pd.Series, size: int) -> np.ndarray:
    """Which ``paths`` have no usable cached row: new, changed (size or mtime), another decode size,
    or missing the hashes asked for (the dihedral ones where ``dihedral``)."""
    now = np.array([file_signature(p) for p in paths], dtype=np.int64).reshape(-1, 2)
    c = cache.reindex(paths.to_numpy())
    hashed = (c["phash256"] != "") & (~dihedral.to_numpy() | (c["phash256_dihedral"] != ""))
    fresh = ((c["file_bytes"] == now[:, 0]) & (c["mtime_ns"] == now[:, 1]) & (c["decode_size"] == size)
             & ((c["problem"] != "") | hashed))
    return ~fresh.fillna(False).to_numpy(bool)


def _run_parallel(paths, size, dihedral, workers, chunk) -> list[dict]:
    """``stats_one`` of every path, in order; in ``workers`` processes, ``chunk`` paths per task."""
    workers = pool_workers(workers)
    serial = workers <= 1 or len(paths) < 2 * chunk
    args = (stats_one, paths, [size] * len(paths), dihedral)
    rows = []
    with (tqdm(total=len(paths), desc="image stats", mininterval=2, disable=len(paths) < 256) as bar,
          nullcontext() if serial else ProcessPoolExecutor(workers) as ex):
        for row in map(*args) if serial else ex.map(*args, chunksize=chunk):
            rows.append(row)
            bar.update()
    return rows
