"""Time the EDA notebook's work on a competition the size of the used-car one.

    python -m bench.eda_speed                           # 33,000 train + 3,000 test photos (built once)
    python -m bench.eda_speed --n-train 3000 --n-test 500
    python -m bench.eda_speed --build-only              # only build (resumable: rerun after a stop)

The competition is built once under ``--out`` (``<out>/train<N>_test<M>/``): JPEG photos of 640x480
to 1280x960 pixels in ~100 class folders plus ``test/``, made from the real sample photos that
scikit-learn and scikit-image ship (random crops, resizes, flips, colour gains and sensor-like noise,
JPEG quality 82-95), with ~1% planted exact/near duplicates and train->test leaks. Building is
parallel and resumable: every file is a pure function of its index and is written atomically, so a
rerun only makes the missing ones.

Timed (cold: ``scan.csv`` and ``eda/`` removed first, files in the OS page cache after building):
scan_competition, image_stats (one decode per image: stats + hashes), find_duplicates, shift_scores
(KS + adversarial AUC), bad_files. Plotting is excluded. The last line printed is the total time and
images per second; ``--warm`` times a second, cached run as well.
"""
from __future__ import annotations

import argparse
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from lib.core.cli import command_parser
from lib.core.io import read_json, write_json

BRANDS = ["현대", "기아", "제네시스", "쌍용", "르노코리아", "BMW", "Benz", "Audi", "Toyota", "Volvo"]
SIZES = [(640, 480), (800, 600), (1024, 768), (1280, 960), (1280, 720), (960, 720), (480, 640), (768, 1024)]
_SOURCES: list[np.ndarray] = []
_NOISE: np.ndarray | None = None


def class_names(n: int) -> list[str]:
    return [f"{BRANDS[k % len(BRANDS)]}_{k:03d}" for k in range(n)]


def sample_photos() -> list[np.ndarray]:
    """The real photos shipped with scikit-learn and scikit-image, as RGB uint8 arrays."""
    if not _SOURCES:
        import skimage.data as sd
        from sklearn.datasets import load_sample_images
        _SOURCES.extend(load_sample_images().images)
        for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
                     "retina", "camera", "moon", "coins", "grass", "gravel", "brick", "clock",
                     "colorwheel", "stereo_motorcycle", "cat", "page", "text"):
            try:
                a = getattr(sd, name)()
            except Exception:  # noqa: BLE001 - a missing sample (needs a download) is skipped
                continue
            a = a[0] if isinstance(a, tuple) else a
            a = np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a[..., :3]
            _SOURCES.append(np.ascontiguousarray(a.astype(np.uint8)))
    return _SOURCES


def _params(i: int, n_train: int, seed: int) -> dict:
    """Everything that decides image ``i`` (train: 0..n_train-1, test after). ~1% copy an earlier train image."""
    rng = np.random.default_rng([seed, i])
    if i > 10 and rng.random() < 0.01:
        j = int(rng.integers(0, min(i, n_train)))
        p = _params(j, n_train, seed)
        if rng.random() < 0.5:  # near duplicate: re-encoded at another quality
            p["quality"] = 97 - p["quality"] + 80
        return p
    return {"src": int(rng.integers(0, 1 << 30)), "seed": [seed, i], "quality": int(rng.integers(82, 96))}


def _render(p: dict) -> Image.Image:
    global _NOISE
    srcs = sample_photos()
    rng = np.random.default_rng(p["seed"])
    src = srcs[p["src"] % len(srcs)]
    w, h = SIZES[int(rng.integers(0, len(SIZES)))]
    sh, sw = src.shape[:2]
    ch, cw = int(sh * rng.uniform(0.45, 1.0)), int(sw * rng.uniform(0.45, 1.0))
    y, x = int(rng.integers(0, sh - ch + 1)), int(rng.integers(0, sw - cw + 1))
    im = Image.fromarray(src[y:y + ch, x:x + cw]).resize((w, h), Image.BILINEAR)
    if rng.random() < 0.5:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    if _NOISE is None:
        _NOISE = np.random.default_rng(0).normal(0, 3.0, (1100, 1400, 3)).astype(np.float32)
    oy, ox = int(rng.integers(0, 1100 - h)), int(rng.integers(0, 1400 - w))
    gain = rng.uniform(0.8, 1.2, 3).astype(np.float32)
    a = np.asarray(im, dtype=np.float32) * gain + _NOISE[oy:oy + h, ox:ox + w]
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def _make(task) -> int:
    """Write the files of one chunk that are missing; returns the chunk's length."""
    items, n_train, seed = task
    for i, path in items:
        if not os.path.exists(path):
            p = _params(i, n_train, seed)
            tmp = f"{path}.{os.getpid()}.tmp"
            _render(p).save(tmp, format="JPEG", quality=p["quality"])
            os.replace(tmp, path)
    return len(items)


def build(out="data/bench_eda", n_train=33_000, n_test=3_000, n_classes=100, seed=0, workers=None) -> Path:
    """Build (or finish building) the benchmark competition; returns its root."""
    root = Path(out) / f"train{n_train}_test{n_test}"
    args = {"n_train": n_train, "n_test": n_test, "n_classes": n_classes, "seed": seed}
    if (root / "bench.json").exists() and read_json(root / "bench.json") == args:
        return root
    names = class_names(n_classes)
    labels = np.random.default_rng(seed).integers(0, n_classes, n_train)
    items = [(i, str(root / "train" / names[labels[i]] / f"{i:06d}.jpg")) for i in range(n_train)]
    items += [(n_train + k, str(root / "test" / f"TEST_{k:05d}.jpg")) for k in range(n_test)]
    for c in names:
        (root / "train" / c).mkdir(parents=True, exist_ok=True)
    (root / "test").mkdir(parents=True, exist_ok=True)
    for tmp in root.rglob("*.tmp"):
        tmp.unlink()  # left by an interrupted build
    todo = [it for it in items if not os.path.exists(it[1])]
    chunks = [(todo[k:k + 100], n_train, seed) for k in range(0, len(todo), 100)]
    workers = workers or os.cpu_count() or 1
    with ProcessPoolExecutor(workers) as ex, tqdm(total=len(todo), desc="build", mininterval=5) as bar:
        for n in ex.map(_make, chunks):
            bar.update(n)
    write_json(root / "bench.json", args)
    return root


def run_eda(root: Path, workers=None) -> dict:
    """The notebook's computations in order; returns seconds per step."""
    from lib.data.competition import scan_competition
    from lib.insight import duplicates, eda, image_stats, shift
    t, times = time.perf_counter(), {}

    def lap(name):
        nonlocal t
        now = time.perf_counter()
        times[name] = now - t
        t = now

    comp = scan_competition(root, workers=workers, verbose=False)
    lap("scan")
    stats = image_stats.image_stats(comp, workers=workers)
    lap("stats+hashes")
    dups = duplicates.find_duplicates(comp, stats)
    lap("duplicates")
    scores = shift.shift_scores(comp, stats)
    lap("shift")
    eda.bad_files(comp, stats)
    lap("bad files")
    times["_n"] = len(comp.train) + len(comp.test)
    leaks = ((dups["split"] == "test") & (dups["dup_of_split"] == "train")).sum()
    times["_found"] = (f"{(dups['split'] == 'train').sum()} redundant train images, {leaks} train->test leaks, "
                       f"{int(scores['flagged'].sum())} shifted stats")
    return times


def parser() -> argparse.ArgumentParser:
    ap = command_parser("bench.eda_speed", __doc__)
    ap.add_argument("--out", default="data/bench_eda", help="the competition goes to <out>/train<N>_test<M>/")
    ap.add_argument("--n-train", type=int, default=33_000, help="train photos")
    ap.add_argument("--n-test", type=int, default=3_000, help="test photos")
    ap.add_argument("--n-classes", type=int, default=100, help="class folders")
    ap.add_argument("--workers", type=int, default=None, help="processes of the image pass (None: the kit's choice)")
    ap.add_argument("--build-only", action="store_true", help="only build the competition (resumable)")
    ap.add_argument("--warm", action="store_true", help="also time a second run that reuses the caches")
    return ap


def main(argv=None) -> None:
    a = parser().parse_args(argv)
    t0 = time.perf_counter()
    root = build(a.out, a.n_train, a.n_test, a.n_classes, workers=a.workers)
    print(f"competition: {root} (ready in {time.perf_counter() - t0:.0f} s)")
    if a.build_only:
        return
    for p in (root / "scan.csv", root / "eda"):
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    runs = [("cold", run_eda(root, a.workers))]
    if a.warm:
        runs.append(("warm", run_eda(root, a.workers)))
    for kind, times in runs:
        steps = ", ".join(f"{k} {v:.1f} s" for k, v in times.items() if not k.startswith("_"))
        print(f"{kind}: {steps}; found {times['_found']}")
    total, n = sum(v for k, v in runs[0][1].items() if not k.startswith("_")), runs[0][1]["_n"]
    print(f"EDA total (cold, plots excluded): {total:.1f} s for {n} images = {n / total:.0f} images/s "
          f"on {a.workers or os.cpu_count()} workers")


if __name__ == "__main__":
    main()
