"""Images per second per core of the training dataset at 224 px, against the naive path.

    python -m bench.data_throughput [--n 300] [--size 224] [--seconds 10] [--quality 90]

Inputs: 1280x960 JPEG photos (quality 90 by default; 75 is Pillow's default) made from the real sample
photos that scikit-learn and scikit-image ship (random crops, flips, colour gains and sensor-like noise;
see eda_speed.py).
All three paths run in this process on one core (torch, OpenCV and BLAS threads set to 1) and end
in the same augmentation (the `light` preset: random-resized crop, flip, normalise, to tensor):

    naive    PIL full decode -> albumentations Resize(224) -> augmentation
    kit      lib ImageDataset without cache: reduced-scale JPEG decode (libjpeg DCT scaling) ->
             area resize -> augmentation
    cache    lib ImageDataset over the pre-resized uint8 memmap -> augmentation

The cache build itself is timed too (it is paid once per image size, shared by folds and backbones).
The last line prints both ratios.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from PIL import Image

from bench.eda_speed import sample_photos  # the real sample photos
from lib.core.cli import command_parser
from lib.data.augment import get_augment
from lib.data.dataset import ImageDataset, build_cache
from lib.data.images import CV_REDUCED_FLAGS


def make_photos(folder: Path, n: int, w: int = 1280, h: int = 960, seed: int = 0, quality: int = 90) -> list[str]:
    """``n`` JPEG photos of ``w x h`` at JPEG ``quality`` from the shipped sample photos; reused when present."""
    folder.mkdir(parents=True, exist_ok=True)
    srcs, noise = sample_photos(), np.random.default_rng(seed).normal(0, 3.0, (h, w, 3)).astype(np.float32)
    paths = []
    for i in range(n):
        p = folder / f"photo_{i:04d}.jpg"
        if not p.exists():
            rng = np.random.default_rng([seed, i])
            src = srcs[i % len(srcs)]
            sh, sw = src.shape[:2]
            ch, cw = int(sh * rng.uniform(0.5, 1)), int(sw * rng.uniform(0.5, 1))
            y, x = int(rng.integers(0, sh - ch + 1)), int(rng.integers(0, sw - cw + 1))
            a = np.asarray(Image.fromarray(src[y:y + ch, x:x + cw]).resize((w, h), Image.BILINEAR), np.float32)
            a = a * rng.uniform(0.85, 1.15, 3).astype(np.float32) + np.roll(noise, i * 37, axis=1)
            Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(p, quality=quality)
        paths.append(str(p))
    return paths


class NaiveDataset(torch.utils.data.Dataset):
    """What a competitor writes first: full PIL decode, then albumentations Resize, then augmentation."""

    def __init__(self, paths, size, aug):
        self.paths, self.tfm = paths, A.Compose([A.Resize(size, size), *aug.transforms])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        img = np.asarray(Image.open(self.paths[i]).convert("RGB"))
        return self.tfm(image=img)["image"], 0


def rates(datasets: dict, seconds: float, rounds: int = 5) -> dict:
    """Images per second of each dataset, measured in interleaved rounds of ``seconds / rounds``
    each, so that load from other processes falls on every path alike."""
    counts, spent = {k: 0 for k in datasets}, {k: 0.0 for k in datasets}
    for ds in datasets.values():
        ds[0]  # warm-up
    for _ in range(rounds):
        for k, ds in datasets.items():
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds / rounds:
                ds[(counts[k] + n) % len(ds)]
                n += 1
            counts[k] += n
            spent[k] += time.perf_counter() - t0
    return {k: counts[k] / spent[k] for k in datasets}


def decode_floor(paths: list[str], size: int, seconds: float = 2.0) -> dict:
    """Milliseconds per photo of libjpeg-turbo's scaled decode alone (``cv2.imdecode`` of bytes already
    in memory) at the scale the kit uses for ``size`` and at 1/8: the entropy decoding that DCT
    scaling cannot skip, and so the floor under any decoding path."""
    data = [np.fromfile(p, np.uint8) for p in paths]
    with Image.open(paths[0]) as im:
        short = min(im.size)
    scale = max(s for s in (1, 2, 4, 8) if short // s >= size)  # as lib.data.images.read_image picks it
    flags = {scale: CV_REDUCED_FLAGS[scale], 8: CV_REDUCED_FLAGS[8]}
    out = {}
    for s, flag in flags.items():
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            cv2.imdecode(data[n % len(data)], flag)
            n += 1
        out[s] = (time.perf_counter() - t0) / n * 1e3
    return out


def parser() -> argparse.ArgumentParser:
    ap = command_parser("bench.data_throughput", __doc__)
    ap.add_argument("--n", type=int, default=300, help="photos (1280x960)")
    ap.add_argument("--size", type=int, default=224, help="training image size, pixels (square)")
    ap.add_argument("--seconds", type=float, default=10.0, help="time per path (in 5 interleaved rounds)")
    ap.add_argument("--quality", type=int, default=90, help="JPEG quality of the photos (the entropy "
                    "decoding that DCT scaling cannot skip grows with it)")
    ap.add_argument("--out", default="data/bench_photos", help="photos go to <out>/q<quality>")
    return ap


def main(argv=None) -> None:
    a = parser().parse_args(argv)
    torch.set_num_threads(1), cv2.setNumThreads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    paths = make_photos(Path(a.out) / f"q{a.quality}", a.n, quality=a.quality)
    kb = np.mean([os.path.getsize(p) for p in paths]) / 1024
    aug = get_augment("light", a.size)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cache = build_cache(paths, a.size, tmp, "bench", workers=1, progress=False)
        build = len(paths) / (time.perf_counter() - t0)
        r = rates({"naive": NaiveDataset(paths, a.size, aug),
                   "kit": ImageDataset(paths, np.zeros(len(paths)), aug, a.size),
                   "cache": ImageDataset(paths, np.zeros(len(paths)), aug, a.size, cache)}, a.seconds)
    naive, kit, cached = r["naive"], r["kit"], r["cache"]
    floor = decode_floor(paths, a.size)
    aug_ms = 1e3 / r["cache"]
    print(f"{len(paths)} photos 1280x960, JPEG quality {a.quality} (mean {kb:.0f} kB) -> {a.size}px, "
          "one core, `light` augmentation")
    print(f"naive (PIL full decode + A.Resize): {naive:8.1f} img/s")
    print(f"kit, reduced-scale decode:          {kit:8.1f} img/s")
    print(f"kit, pre-resized cache:             {cached:8.1f} img/s   (cache built once at {build:.1f} img/s)")
    scale = min(floor)
    print(f"decode alone (bytes in memory): 1/{scale} scale {floor[scale]:.2f} ms, 1/8 scale {floor[8]:.2f} ms; "
          f"naive {1e3 / naive:.2f} ms/img; cached path {aug_ms:.2f} ms/img; best possible decode ratio "
          f"{(1e3 / naive) / (floor[scale] + aug_ms):.2f}x")
    print(f"ratio vs naive: decode {kit / naive:.2f}x (target 3x), cache {cached / naive:.2f}x (target 10x)")


if __name__ == "__main__":
    main()
