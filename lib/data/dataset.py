"""Images into tensors: the pre-resized cache and the torch Dataset that trains from it.

The cache holds every image of a competition made ``size x size`` RGB in one ``uint8`` memory-mapped
array per split (``<root>/cache/<size>px/<split>-<key>.u8``; ``<size>px-pad/`` for aspect-kept images),
so every fold and backbone at that size shares it and later epochs decode nothing. The key
(``cache_key``) hashes the ordered list of files with their sizes and mtimes (and the resize mode): a
changed list builds a new file beside the old one, never over it, so a run that has the old one mapped
keeps reading what it mapped. Building is resumable (finished chunks are kept) and the file gets its
name, by an atomic rename, only once complete.

A recipe's cache is ``TrainConfig.cache_size`` px: ``presize`` x ``img_size`` (fastai's presizing: with
1.25, the training crops are cut from images larger than the model sees and scaled down to ``img_size``,
not up; validation and test images are resized to ``img_size``, by the transforms of ``lib.data.augment``).
``resize`` says how an image becomes the square: ``squash`` stretches it, ``pad`` keeps its aspect (the
longer side fits the square, the rest filled with the mean colour of the image's edge: white around a page).
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import random
import re
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from lib.core.choices import RESIZES
from lib.core.config import TrainConfig
from lib.core.device import pool_workers
from lib.core.io import file_signature
from lib.data.augment import get_augment
from lib.data.competition import Competition
from lib.data.images import read_image

CHUNK = 512  # images per unit of work (and of resumable progress)


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    # area averaging only where it matters (shrinking by 2x or more); bilinear otherwise is 3x cheaper
    big = img.shape[0] >= 2 * h or img.shape[1] >= 2 * w
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if big else cv2.INTER_LINEAR)


def resize_square(img: np.ndarray, size: int, resize: str = "squash") -> np.ndarray:
    """``uint8[H, W, 3]`` -> ``uint8[size, size, 3]``; area interpolation when shrinking 2x or more.

    ``squash`` stretches the image to the square; ``pad`` scales its longer side to ``size`` (aspect
    kept), centres it and fills the rest with the mean colour of its edge pixels."""
    if img.shape[0] == size and img.shape[1] == size:
        return img
    if resize == "squash":
        return _resize(img, size, size)
    if resize != "pad":
        raise ValueError(f"resize {resize!r}: choose one of {list(RESIZES)}")
    h, w = img.shape[:2]
    nh, nw = max(1, round(h * size / max(h, w))), max(1, round(w * size / max(h, w)))
    edge = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]]).mean(axis=0).round().astype(np.uint8)
    out = np.empty((size, size, 3), np.uint8)
    out[:] = edge
    y, x = (size - nh) // 2, (size - nw) // 2
    out[y:y + nh, x:x + nw] = _resize(img, nw, nh)
    return out


def load_resized(path: str, size: int, resize: str = "squash") -> np.ndarray:
    """Decode (at reduced JPEG scale) and make ``uint8[size, size, 3]`` (``resize_square``)."""
    return resize_square(read_image(path, size=size), size, resize)


def _cache_chunk(args) -> int:
    file, paths, start, size, n, resize = args
    arr = np.memmap(file, dtype=np.uint8, mode="r+", shape=(n, size, size, 3))
    for i, p in enumerate(paths):
        arr[start + i] = load_resized(p, size, resize)
    arr.flush()
    return len(paths)


def cache_key(paths: list[str], size: int, resize: str = "squash") -> str:
    """16 hex digits of the sha1 of ``size``, ``resize`` and the ordered ``paths`` with each file's size and
    mtime (``lib.core.io.file_signature``): another list, order, size, resize or a rewritten image is
    another key."""
    head = f"{size}px" if resize == "squash" else f"{size}px {resize}"
    lines = [head] + [f"{p}|{'|'.join(map(str, file_signature(p)))}" for p in paths]
    return hashlib.sha1("\n".join(lines).encode()).hexdigest()[:16]


def build_cache(paths: list[str], size: int, cache_dir, split: str, workers: int | None = None,
                progress: bool = True, resize: str = "squash") -> np.ndarray:
    """Return ``uint8[N, size, size, 3]`` (read-only memmap) of ``paths`` resized, building it if needed.

    ``resize`` (``resize_square``): "squash" in ``<size>px/``, "pad" in ``<size>px-pad/``, keyed apart too.
    The array lives in ``<cache_dir>/<size>px/<split>-<key>.u8`` (``cache_key``), which appears only once
    complete: it is built in ``<split>-<key>.u8.part`` (resumable: ``.chunks`` lists the chunks done) and
    renamed. A file is never written again once it has its name, so a run that has it mapped keeps its
    pixels whatever the list becomes; the other keys' files of ``split`` are then deleted (a process
    that maps one keeps reading it: the disk space is freed when it unmaps). Safe to call from several
    runs at once: a file lock makes the later ones wait and reuse it.
    """
    cache_dir = Path(cache_dir) / (f"{size}px" if resize == "squash" else f"{size}px-{resize}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(paths, size, resize)
    data = cache_dir / f"{split}-{key}.u8"
    part, done_file = data.with_name(data.name + ".part"), data.with_name(data.name + ".chunks")
    shape = (len(paths), size, size, 3)
    with open(cache_dir / f"{split}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not data.exists():
            _build(paths, size, split, part, done_file, shape, workers, progress, resize)
            with open(part, "rb") as f:
                os.fsync(f.fileno())
            os.replace(part, data)  # complete: from now on read only
            done_file.unlink(missing_ok=True)
        for old in _other_files(cache_dir, split, data):
            old.unlink(missing_ok=True)
        return np.memmap(data, dtype=np.uint8, mode="r", shape=shape)  # mapped before another build may start


def _build(paths, size, split, part: Path, done_file: Path, shape, workers, progress, resize: str) -> None:
    """Fill ``part`` (``uint8[shape]``) chunk by chunk, keeping on from the chunks ``done_file`` lists."""
    done = set()
    if done_file.exists() and part.exists() and part.stat().st_size == int(np.prod(shape)):
        done = {int(s) for s in done_file.read_text().split()}
    else:
        np.memmap(part, dtype=np.uint8, mode="w+", shape=shape).flush()  # a file nobody else maps
        done_file.write_text("")
    todo = [(str(part), paths[s:s + CHUNK], s, size, len(paths), resize)
            for s in range(0, len(paths), CHUNK) if s not in done]
    workers = pool_workers(workers)
    bar = tqdm(total=len(paths), initial=len(paths) - sum(len(t[1]) for t in todo),
               desc=f"cache {split} {part.parent.name}", mininterval=5, disable=not progress or not todo)
    with ProcessPoolExecutor(workers) if workers > 1 and len(todo) > 1 else nullcontext() as ex:
        for t, n in zip(todo, (ex.map if ex else map)(_cache_chunk, todo)):
            with open(done_file, "a") as f:
                f.write(f"{t[2]}\n")
            bar.update(n)
    bar.close()


def _other_files(cache_dir: Path, split: str, keep: Path) -> list[Path]:
    """The files of ``split`` in ``cache_dir`` other than ``keep``'s: other keys' arrays and unfinished
    builds, and the single ``<split>.u8`` (with its ``.json`` and ``.chunks``) of earlier versions."""
    mine = re.compile(rf"{re.escape(split)}(-[0-9a-f]{{16}})?\.(u8|u8\.part|u8\.chunks|json|chunks)")
    return [f for f in cache_dir.iterdir()
            if mine.fullmatch(f.name) and f.name not in (keep.name, keep.name + ".part", keep.name + ".chunks")]


class ImageDataset(torch.utils.data.Dataset):
    """``(image FloatTensor[3, S, S], target)`` pairs: target int64 (-1 for unlabelled images), or
    with ``soft`` (``float[N, C]``, rows of class probabilities: a teacher's, ``lib.predict.teacher``) the
    image's row as FloatTensor[C]; ``targets`` then still holds the hard labels.

    Images come from ``cache`` (``uint8[M, S, S, 3]``, a memmap left on disk, S = ``size``) at rows
    ``cache_rows`` (``int[N]``, default 0..N-1) when given, else are decoded from ``paths`` at reduced scale
    and made S x S by ``resize`` (``resize_square``); ``tfm`` brings them to the model's size.
    ``tfm`` is an albumentations Compose ending in ToTensorV2. Augmentation randomness is a function
    of (seed, epoch, index) only: set ``epoch`` before each epoch and a run replays identically after
    a resume and with any worker count.
    """

    def __init__(self, paths, targets=None, tfm=None, size: int = 224, cache: np.ndarray | None = None,
                 cache_rows=None, seed: int = 0, soft: np.ndarray | None = None, resize: str = "squash"):
        self.paths = list(paths)
        self.targets = np.full(len(self.paths), -1, np.int64) if targets is None else np.asarray(targets, np.int64)
        if len(self.targets) != len(self.paths):
            raise ValueError(f"{len(self.paths)} paths but {len(self.targets)} targets")
        self.soft = None if soft is None else np.asarray(soft, np.float32)
        if self.soft is not None and (self.soft.ndim != 2 or len(self.soft) != len(self.paths)):
            raise ValueError(f"soft targets must be [N={len(self.paths)}, C], got shape {self.soft.shape}")
        self.tfm, self.size, self.cache, self.seed, self.epoch, self.resize = tfm, size, cache, seed, 0, resize
        self.cache_rows = np.arange(len(self.paths)) if cache_rows is None else np.asarray(cache_rows, np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, i: int) -> np.ndarray:
        """The un-augmented ``uint8[S, S, 3]`` image ``i``."""
        if self.cache is not None:
            return np.asarray(self.cache[self.cache_rows[i]])
        return load_resized(self.paths[i], self.size, self.resize)

    def __getitem__(self, i: int):
        img = self.image(i)
        if self.tfm is not None:
            s = (self.seed * 1_000_003 + self.epoch * 100_003 + int(i)) % 2**32
            # one generator shared by every transform (set_random_seed would give each its own copy of
            # the same stream, so that e.g. two p=0.5 transforms always fire together), 4x cheaper too
            self.tfm.set_random_state(np.random.default_rng(s), random.Random(s))
            img = self.tfm(image=img)["image"]
        else:
            img = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float() / 255.0
        return img, torch.from_numpy(self.soft[i]) if self.soft is not None else torch.tensor(self.targets[i])


def image_dataset(cfg: TrainConfig, comp: Competition, split: str, rows: pd.DataFrame, aug: str,
                  data_cfg: dict, targets: bool = True) -> ImageDataset:
    """The images of ``rows`` (a subset of ``comp.train`` or ``comp.test``, by ``split``) at the
    recipe's size, normalised for the backbone, augmented by preset ``aug`` with the recipe's flips;
    read from the split's pre-resized cache (``cfg.cache_size`` px, ``cfg.resize``) when ``cfg.cache``,
    else decoded each time the same way."""
    table = comp.train if split == "train" else comp.test
    size = cfg.cache_size
    cache = (build_cache(table["path"].tolist(), size, comp.work / "cache", split, progress=cfg.progress,
                         resize=cfg.resize) if cfg.cache else None)
    pos = pd.Series(np.arange(len(table)), index=table["id"].to_numpy()).loc[rows["id"]].to_numpy()
    tfm = get_augment(aug, cfg.img_size, data_cfg["mean"], data_cfg["std"], cfg.hflip, cfg.vflip, cfg.rot90)
    return ImageDataset(rows["path"], rows["target"] if targets else None, tfm, size,
                        cache, pos if cache is not None else None, cfg.seed, resize=cfg.resize)
