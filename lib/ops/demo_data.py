"""Build the embedded demo competition from real data that needs no download.

    build_demo()                                 # fashion-mnist if Debian's files are there, else digits
    build_demo("digits", max_train_per_class=60, max_test=200)   # command line: python -m lib.ops.demo

It writes ``data/<name>/`` in exactly the shape competitions ship (see ``lib.data.competition``): ``train/<class>/``
with Korean class names (one with a space), 3-channel JPEGs of varying sizes, ``test/``, ``test.csv``
(ID, img_path), ``sample_submission.csv`` (ID + a probability column per class) and, kept apart,
``solution.csv`` with the true test labels: read only by ``score_submission``, the demo's final,
explicitly marked scoring step.

Sources: ``fashion-mnist`` (the four idx ``.gz`` files of Debian's ``dataset-fashion-mnist`` in
/usr/share/datasets/fashion-mnist, or any folder given by ``--source``), ``digits`` (scikit-learn's
``load_digits``, 8x8 scans of handwritten digits, always present).
"""
from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from lib.core.io import read_json, write_csv, write_json
from lib.core.metrics import fit_temperature, probs_to_logits, scores

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FMNIST_CLASSES = ["티셔츠", "바지", "풀오버", "드레스", "코트", "샌들", "셔츠", "스니커즈", "가방", "앵클 부츠"]
DIGIT_CLASSES = ["영", "일", "이", "삼", "사", "오", "육", "칠", "팔", "구"]


def read_idx(path) -> np.ndarray:
    """Read an idx file (optionally gzipped): uint8 images ``[N, 28, 28]`` or labels ``[N]``."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        magic, = struct.unpack(">I", f.read(4))
        ndim = magic & 0xFF
        dims = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(dims)


def fmnist_available(folder=FMNIST_DIR) -> bool:
    return all((Path(folder) / f"{s}-{k}-idx{d}-ubyte.gz").exists()
               for s in ("train", "t10k") for k, d in (("images", 3), ("labels", 1)))


def load_source(source: str):
    """Return (train_images uint8[N,h,w], train_labels[N], test_images, test_labels, class names, name)."""
    if source == "digits":
        d = load_digits()
        imgs = (d.images * (255.0 / 16.0)).round().astype(np.uint8)
        xtr, xte, ytr, yte = train_test_split(imgs, d.target, test_size=0.25, stratify=d.target, random_state=0)
        return xtr, ytr, xte, yte, DIGIT_CLASSES, "digits"
    folder = FMNIST_DIR if source == "fashion-mnist" else Path(source)
    if not fmnist_available(folder):
        raise FileNotFoundError(f"{folder}: Fashion-MNIST idx files not found (train/t10k images/labels .gz); "
                                "install them with `apt-get install -y dataset-fashion-mnist`, or use --source digits")
    r = lambda s, k, d: read_idx(folder / f"{s}-{k}-idx{d}-ubyte.gz")  # noqa: E731
    return (r("train", "images", 3), r("train", "labels", 1), r("t10k", "images", 3), r("t10k", "labels", 1),
            FMNIST_CLASSES, "fmnist")


def _subsample(y: np.ndarray, per_class: int | None, total: int | None, rng) -> np.ndarray:
    idx = np.arange(len(y))
    if per_class:
        idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in np.unique(y)])
    if total and len(idx) > total:
        idx = rng.permutation(idx)[:total]
    return np.sort(idx)


def _save(img: np.ndarray, path: Path, rng, scale: tuple[int, int]) -> None:
    """Save a grey ``uint8[h, w]`` image as an RGB JPEG upscaled to a random, not-square size."""
    h = int(rng.integers(*scale))
    w = int(np.clip(h * rng.uniform(0.85, 1.2), scale[0], scale[1] + 8))
    Image.fromarray(img).convert("RGB").resize((w, h), Image.BILINEAR).save(path, quality=92)


def build_demo(source: str = "auto", out: str = "data", name: str | None = None,
               max_train_per_class: int | None = None, max_test: int | None = None,
               seed: int = 0, verbose: bool = True) -> Path:
    """Build (or reuse, when built with the same arguments) the demo competition; returns its root."""
    if source == "auto":
        source = "fashion-mnist" if fmnist_available() else "digits"
        if verbose:
            why = (f"its files are in {FMNIST_DIR}" if source == "fashion-mnist" else
                   f"{FMNIST_DIR} is missing (`apt-get install -y dataset-fashion-mnist` for the larger demo)")
            print(f"demo source: {source} ({why})")
    xtr, ytr, xte, yte, classes, default_name = load_source(source)
    root = Path(out) / (name or default_name)
    args = {"source": source, "max_train_per_class": max_train_per_class, "max_test": max_test, "seed": seed}
    marker = root / "demo.json"
    if marker.exists() and read_json(marker) == args:
        if verbose:
            print(f"demo competition already built: {root}")
        return root
    if root.exists() and not marker.exists():  # a real competition folder of the same name: never deleted
        raise FileExistsError(f"{root} exists and was not built by lib.ops.demo (no demo.json); nothing was "
                              "deleted: give another --name or --out")
    if root.exists():
        shutil.rmtree(root)  # a demo built with other arguments: classes, folds and caches would not fit
    rng = np.random.default_rng(seed)
    tr = _subsample(ytr, max_train_per_class, None, rng)
    te = _subsample(yte, None, max_test, rng)
    scale = (int(xtr.shape[1]), int(xtr.shape[1] * 1.5)) if xtr.shape[1] >= 28 else (24, 40)
    for c in classes:
        (root / "train" / c).mkdir(parents=True, exist_ok=True)
    (root / "test").mkdir(parents=True, exist_ok=True)
    for k, i in enumerate(tr):
        _save(xtr[i], root / "train" / classes[ytr[i]] / f"TRAIN_{k:05d}.jpg", rng, scale)
    ids = [f"TEST_{k:05d}" for k in range(len(te))]
    for k, i in enumerate(te):
        _save(xte[i], root / "test" / f"{ids[k]}.jpg", rng, scale)
    write_csv(root / "test.csv", pd.DataFrame({"ID": ids, "img_path": [f"./test/{i}.jpg" for i in ids]}))
    sample = pd.DataFrame(np.full((len(ids), len(classes)), 1.0 / len(classes)), columns=classes)
    sample.insert(0, "ID", ids)
    write_csv(root / "sample_submission.csv", sample)
    write_csv(root / "solution.csv", pd.DataFrame({"ID": ids, "label": [classes[yte[i]] for i in te],
                                                   "target": yte[te]}))
    write_json(marker, args)
    if verbose:
        print(f"demo competition: {root} ({source}: {len(tr)} train, {len(te)} test images, {len(classes)} classes)")
    return root


def score_submission(root, submission) -> dict:
    """FINAL SCORING ONLY: score a submission against the demo's held-back ``solution.csv``.

    Nothing in training, analysis or blending reads ``solution.csv``; this is the leaderboard.
    """

    root = Path(root)
    sol = pd.read_csv(root / "solution.csv", dtype={"ID": str})
    sub = pd.read_csv(submission, dtype={"ID": str}) if not isinstance(submission, pd.DataFrame) else submission
    classes = list(pd.read_csv(root / "sample_submission.csv", nrows=0).columns[1:])
    sub = sub.set_index(sub.columns[0])
    missing = sorted(set(sol["ID"]) - set(sub.index))
    if missing or set(classes) - set(sub.columns):
        raise ValueError(f"{submission}: {len(missing)} test ids missing (e.g. {missing[:3]}) or class columns "
                         "missing; write it with lib.predict.submission.write_submission")
    probs, y = sub.loc[sol["ID"], classes].to_numpy(dtype=np.float64), sol["target"].to_numpy()
    # the temperature that would minimise the test log loss on top of what was submitted: 1 = calibrated
    extra = fit_temperature(probs_to_logits(probs), y)
    return {**{f"test_{k}": v for k, v in scores(y, probs).items()}, "extra_temperature": extra}
