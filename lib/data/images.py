"""Decoding image files: any mode to RGB, EXIF orientation, reduced-scale JPEG decoding, and
header-level checks that name every file that cannot be used and why.

Images up to ``MAX_PIXELS`` (Pillow's own decompression-bomb limit, about 179 megapixels) are
decoded; larger ones are reported as bad files with their size, never decoded. Pillow's settings are
left as they are: its warning for images between its two limits is silenced around the kit's own
reads only.
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image, ImageOps
from tqdm import tqdm

from lib.core.device import pool_workers
from lib.core.io import file_signature, write_csv

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
MAX_PIXELS = 178_956_970  # Pillow's hard limit (2 x Image.MAX_IMAGE_PIXELS): refused with a message, not decoded


class BadImageError(ValueError):
    """An image file that cannot be used; the message names the file and the reason."""


CV_REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
               8: cv2.IMREAD_REDUCED_COLOR_8}


def read_image(path, size: int | None = None) -> np.ndarray:
    """Decode ``path`` to RGB ``uint8[H, W, 3]`` with EXIF orientation applied.

    Any mode (L, LA, P with transparency, RGBA, CMYK, I;16) becomes RGB; alpha is composited on
    white. With ``size``, JPEGs are decoded at a reduced scale (libjpeg's DCT scaling, 1/2, 1/4 or
    1/8) no smaller than ``size`` on the shorter side: the full-size decode that a 224-px model never
    needs is skipped. Plain RGB/grey JPEGs go through OpenCV's libjpeg-turbo (about 2x PIL's speed
    here); everything else through PIL.
    """
    try:
        with _open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise BadImageError(f"{path}: {im.width}x{im.height} pixels is over the {MAX_PIXELS:,} "
                                    "limit; downscale it (e.g. `mogrify -resize 4096x4096\\>`) or drop it")
            scale = 1
            if size and im.format == "JPEG":
                scale = max((s for s in (1, 2, 4, 8) if min(im.width, im.height) // s >= size), default=1)
                if im.mode in ("RGB", "L") and im.getexif().get(0x0112, 1) == 1:
                    flags = CV_REDUCED_FLAGS[scale] | cv2.IMREAD_IGNORE_ORIENTATION
                    img = cv2.imdecode(np.fromfile(path, np.uint8), flags)
                    if img is not None:
                        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
                im.draft("RGB", (im.width // scale, im.height // scale))
            im = ImageOps.exif_transpose(im)
            return _to_rgb(im)
    except BadImageError:
        raise
    except Image.DecompressionBombError as e:
        raise BadImageError(f"{path}: over the {MAX_PIXELS:,}-pixel limit (decompression bomb guard); "
                            "downscale it (e.g. `mogrify -resize 8192x8192\\>`) or drop it") from e
    except (OSError, ValueError, SyntaxError) as e:
        raise BadImageError(f"{path}: cannot decode ({type(e).__name__}: {e})") from e


def _open(path) -> Image.Image:
    """``Image.open`` without Pillow's warning for big photos (over ~89 MP, still decoded); above
    ``MAX_PIXELS`` Pillow raises ``DecompressionBombError``, which callers report."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(path)


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        hi = a.max() if a.max() > 255 else 255.0
        a = (a / max(hi, 1.0) * 255.0).round().astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im.convert("RGBA"))
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def probe_image(path: str, verify: bool = True) -> dict:
    """Header facts of one file: width, height (after EXIF rotation), bytes, and a problem (or "").

    ``verify`` also decodes the image at 1/8 scale, which finds truncated files for a fraction of
    the cost of a full decode.
    """
    out = {"path": str(path), "width": 0, "height": 0, "bytes": 0, "problem": ""}
    try:
        out["bytes"] = os.path.getsize(path)
        if out["bytes"] == 0:
            out["problem"] = "zero-byte file"
            return out
        with _open(path) as im:
            w, h = im.size
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                w, h = h, w
            out["width"], out["height"] = w, h
            if w * h > MAX_PIXELS:
                out["problem"] = f"{w}x{h} pixels is over the {MAX_PIXELS:,} limit; downscale it"
                return out
            if verify:
                im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
                im.load()
    except Image.DecompressionBombError:
        out["problem"] = f"over the {MAX_PIXELS:,}-pixel limit (decompression bomb guard); downscale it"
    except Exception as e:  # noqa: BLE001 - every reason is reported with the file
        out["problem"] = f"cannot decode: {type(e).__name__}: {e}"
    return out


def probe_images(paths: list[str], verify: bool = True, workers: int | None = None,
                 desc: str = "scan") -> pd.DataFrame:
    """``probe_image`` over many files, in parallel with a progress bar. Returns one row per path."""
    workers = pool_workers(workers)
    if workers <= 1 or len(paths) < 256:
        rows = [probe_image(p, verify) for p in tqdm(paths, desc=desc, mininterval=2, disable=len(paths) < 256)]
    else:
        with ProcessPoolExecutor(workers) as ex:
            rows = list(tqdm(ex.map(probe_image, paths, [verify] * len(paths), chunksize=64),
                             total=len(paths), desc=desc, mininterval=2))
    return pd.DataFrame(rows, columns=["path", "width", "height", "bytes", "problem"])


def probe_images_cached(cache_path: Path, paths: list[str], verify: bool = True,
                        workers: int | None = None) -> pd.DataFrame:
    """``probe_images`` of ``paths`` (index: path), reusing the rows of ``cache_path`` (a CSV it
    keeps up to date) whose file size and mtime have not changed."""
    stats = {p: file_signature(p) for p in paths}
    old = pd.DataFrame(columns=["width", "height", "bytes", "problem", "size", "mtime_ns"],
                       index=pd.Index([], name="path"))
    if cache_path.exists():
        old = pd.read_csv(cache_path, dtype={"problem": str}, keep_default_na=False).set_index("path")
    fresh = [p for p in paths if p not in old.index
             or (old.at[p, "size"], old.at[p, "mtime_ns"]) != stats[p]]
    if fresh:
        new = probe_images(fresh, verify=verify, workers=workers).set_index("path")
        new["size"] = [stats[p][0] for p in new.index]
        new["mtime_ns"] = [stats[p][1] for p in new.index]
        old = pd.concat([old.drop(index=[p for p in fresh if p in old.index]), new]) if len(old) else new
        old = old[~old.index.duplicated(keep="last")]
        write_csv(cache_path, old.reset_index())
    return old.loc[~old.index.duplicated()]
