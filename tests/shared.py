"""Shared fixtures, all tiny real data: the digits demo competition (through lib.ops.demo), two photo
competitions with planted duplicates and a shifted test set (EDA), and a 3-class PNG competition with a
completed run (OOF analysis, re-prediction, blending); and helpers the tests import (``from shared import``).

A pytest plugin that tests/conftest.py loads in every process that runs tests, not in pytest-xdist's
controlling process, which only hands out files and so skips these imports (torch, fastai, lib)."""
from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from fastai.callback.core import Callback
from PIL import Image, ImageEnhance
from sklearn.datasets import load_digits

from lib.data.competition import scan_competition
from lib.data.folds import make_folds
from lib.model.backbones import create_backbone, save_weights

PHOTO_CLASSES = ["고양이", "로켓", "커피 잔"]
PNG_CLASSES = ["영", "일", "칠 번"]  # a space and Hangul, as in real competitions

matplotlib.use("Agg")  # this process only: notebook kernels keep their inline backend (plots as PNG)


def pytest_configure(config):
    """torch in this process takes the thread count tests/conftest.py gave each xdist worker."""
    if "PYTEST_XDIST_WORKER" in os.environ and "OMP_NUM_THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def _digits_source(tmp_path_factory):
    from lib.ops.demo_data import build_demo

    return build_demo("digits", out=str(tmp_path_factory.mktemp("data")), max_train_per_class=20,
                      max_test=60, verbose=False)


@pytest.fixture()
def digits_comp(_digits_source, tmp_path):
    """A fresh demo competition folder per test (10 Korean-named classes x 20 train images, 60 test
    images), so one test's folds.csv or cache never leaks into another."""
    assert not (_digits_source / "folds.csv").exists(), "a test trained on the shared source: give it a copy"
    return shutil.copytree(_digits_source, tmp_path / "digits")


def as_document_competition(src, root, n_test=None):
    """The digits demo reshaped as the document competition ships: flat train/ and test/ folders,
    train.csv (ID with extension, target = class index), meta.csv (target, class_name) and a label
    sample submission (ID, target). Returns root."""
    import json as _json
    classes = _json.loads((src / "classes.json").read_text())["classes"] if (src / "classes.json").exists() \
        else list(pd.read_csv(src / "sample_submission.csv").columns[1:])
    (root / "train").mkdir(parents=True), (root / "test").mkdir()
    rows = []
    for k, c in enumerate(classes):
        for f in sorted((src / "train" / c).glob("*.jpg")):
            name = f"{k:02d}{f.stem}.jpg"
            shutil.copy(f, root / "train" / name)
            rows.append({"ID": name, "target": k})
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"target": range(len(classes)), "class_name": classes}).to_csv(root / "meta.csv", index=False)
    test = sorted((src / "test").glob("*.jpg"))[:n_test]
    for f in test:
        shutil.copy(f, root / "test" / f.name)
    pd.DataFrame({"ID": [f.name for f in test], "target": 0}).to_csv(root / "sample_submission.csv", index=False)
    return root


@pytest.fixture()
def doc_comp(_digits_source, tmp_path):
    """``as_document_competition`` of the digits demo: 10 classes x 20 train images, 60 test images."""
    return as_document_competition(_digits_source, tmp_path / "docs")


def with_descendants(pids: list[int]) -> list[int]:
    """The processes and all they started (papermill, its kernel, DDP and DataLoader workers; Ray workers and
    their runs): what goes when a machine is lost. jupyter_client starts a kernel in a session of its own, so
    killing papermill's process group alone leaves the kernel training on as an orphan that finishes the run."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:           # the process ended while we read
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    tree, grown = set(pids), True
    while grown:
        children = {p for p, pp in parent.items() if pp in tree} - tree
        tree |= children
        grown = bool(children)
    return sorted(tree)


def kill_tree(pids: list[int]) -> None:
    """SIGKILL ``pids`` and every process they started, all at once: a lost machine, no cleanup."""
    for pid in with_descendants(pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # ended first
            pass


def start_and_kill(job, epochs: int = 2, timeout: float = 300, cmd: list[str] | None = None) -> dict:
    """Start a grid job's papermill command (``cmd``, default ``job.command()``), wait until its metrics.json
    records ``epochs`` epochs, then SIGKILL papermill and everything it started (its kernel, any DDP
    workers): a lost machine, no cleanup. Returns the metrics.json left behind."""
    import subprocess
    import time
    proc = subprocess.Popen(cmd or job.command(), start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    metrics = job.run_dir / "metrics.json"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if metrics.exists() and len(json.loads(metrics.read_text())["epochs"]) >= epochs:
            break
        assert proc.poll() is None, "papermill ended before it could be killed"
        time.sleep(0.05)
    kill_tree([proc.pid])
    proc.wait()
    return json.loads(metrics.read_text())


@pytest.fixture()
def bench_script():
    """A bench script as a module: ``bench_script("data_throughput").main([...])``."""
    return lambda name: importlib.import_module(f"bench.{name}")


def _photo(h=48, w=64, seed=0) -> Image.Image:
    from sklearn.datasets import load_sample_images

    img = load_sample_images().images[seed % 2]
    return Image.fromarray(img[:h * 4:4, :w * 4:4])


@pytest.fixture()
def messy(tmp_path):
    """Every kind of bad input the kit must name instead of crashing on."""
    root = tmp_path / "messy"
    ok = root / "train" / "현대 아반떼"          # Korean, with a space
    two = root / "train" / "기아 K5"
    one = root / "train" / "single"
    for d in (ok, two, one, root / "train" / "empty", root / "test"):
        d.mkdir(parents=True)
    for i in range(3):
        _photo(seed=i).save(ok / f"사진 {i}.jpg", quality=90)
        _photo(seed=i + 1).save(two / f"img{i}.jpg", quality=90)
    _photo().save(one / "only.jpg")
    data = (ok / "사진 0.jpg").read_bytes()
    (two / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (two / "zero.jpg").write_bytes(b"")
    (two / "notes.jpg").write_text("this is not an image")
    (two / "readme.txt").write_text("stray file")
    _photo().convert("CMYK").save(two / "cmyk.jpg")
    Image.fromarray((np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 20)).save(two / "deep16.png")
    p = _photo().convert("P", palette=Image.ADAPTIVE)
    p.info["transparency"] = 0
    p.save(two / "palette.png", transparency=0)
    rot = _photo(h=40, w=80)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    rot.save(ok / "exif_rotated.jpg", exif=exif.tobytes())
    for i in range(2):
        _photo(seed=i).save(root / "test" / f"t{i}.jpg")
    sample = pd.DataFrame({"ID": ["t0", "t1"], "기아 K5": 0.25, "single": 0.25,
                           "empty": 0.25, "현대 아반떼": 0.25})
    sample.to_csv(root / "sample_submission.csv", index=False)
    return root


# ---------------------------------------------------------------- photo competitions (EDA)

def _tiles() -> list[np.ndarray]:
    """160x120 RGB tiles (a 4x4 grid) of the real photos scikit-learn and scikit-image ship."""
    import skimage.data as sd
    from sklearn.datasets import load_sample_images
    srcs = list(load_sample_images().images)
    for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
                 "stereo_motorcycle"):  # not "cat": it is chelsea again
        a = getattr(sd, name)()
        srcs.append((a[0] if isinstance(a, tuple) else a)[..., :3])
    tiles = []
    for s in srcs:
        a = np.asarray(Image.fromarray(s).resize((640, 480), Image.BILINEAR))
        tiles += [a[y:y + 120, x:x + 160] for y in range(0, 480, 120) for x in range(0, 640, 160)]
    return [t for t in tiles if t.std() > 25]

def _jpeg(a: np.ndarray, path, quality=90) -> None:
    Image.fromarray(a).save(path, format="JPEG", quality=quality)

def _near(path_in, path_out, scale, quality, brightness=1.0) -> None:
    """Another encoding of the same picture: resized, re-compressed, a little brighter."""
    im = Image.open(path_in)
    im = im.resize((int(im.width * scale), int(im.height * scale)), Image.BILINEAR)
    ImageEnhance.Brightness(im).enhance(brightness).save(path_out, format="JPEG", quality=quality)

def _shifted(a: np.ndarray, rng) -> np.ndarray:
    """The document-competition test set: rotated a quarter turn, noisy, colour-shifted."""
    a = np.rot90(a).astype(np.float32) * np.array([1.3, 1.0, 0.7]) + rng.normal(0, 20, (a.shape[1], a.shape[0], 3))
    return np.clip(a, 0, 255).astype(np.uint8)

@pytest.fixture(scope="module")
def comps(tmp_path_factory):
    """Two competitions with the same train set: test shifted (+ planted duplicates) or drawn like train."""
    tiles = _tiles()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(tiles))
    assert len(order) >= 100, "not enough distinct tiles in the sample photos"
    train, test = order[:60], order[60:100]
    roots = {k: tmp_path_factory.mktemp(k) for k in ("shifted", "like")}
    for root in roots.values():
        for c in PHOTO_CLASSES:
            (root / "train" / c).mkdir(parents=True)
        (root / "test").mkdir()
        for k, t in enumerate(train):
            _jpeg(tiles[t], root / "train" / PHOTO_CLASSES[k % 3] / f"tr{k:03d}.jpg")
    for k, t in enumerate(test):
        _jpeg(_shifted(tiles[t], rng), roots["shifted"] / "test" / f"te{k:03d}.jpg")
        _jpeg(tiles[t], roots["like"] / "test" / f"te{k:03d}.jpg")
    r = roots["shifted"]
    tr = lambda k: r / "train" / PHOTO_CLASSES[k % 3] / f"tr{k:03d}.jpg"  # noqa: E731
    planted = {  # id -> the train id it copies
        "dup_exact": "tr000", "dup_conflict": "tr003", "dup_near": "tr006",
        "leak_exact": "tr009", "leak_near": "tr012", "leak_rot": "tr015"}
    (r / "train" / PHOTO_CLASSES[0] / "dup_exact.jpg").write_bytes(tr(0).read_bytes())      # same class, same bytes
    (r / "train" / PHOTO_CLASSES[1] / "dup_conflict.jpg").write_bytes(tr(3).read_bytes())   # tr003 is class 0
    _near(tr(6), r / "train" / PHOTO_CLASSES[0] / "dup_near.jpg", 1.25, 70, 1.1)
    (r / "test" / "leak_exact.jpg").write_bytes(tr(9).read_bytes())
    _near(tr(12), r / "test" / "leak_near.jpg", 0.9, 80)
    Image.open(tr(15)).transpose(Image.Transpose.ROTATE_90).save(r / "test" / "leak_rot.jpg", quality=90)
    good = tr(18).read_bytes()
    (r / "train" / PHOTO_CLASSES[2] / "broken.jpg").write_bytes(good[: len(good) // 3])     # truncated
    return {k: scan_competition(v, verbose=False) for k, v in roots.items()}, planted


# ---------------------------------------------------------------- a PNG competition and one run

def oof_table(y, probs, ids=None, fold=0):
    y = np.asarray(y)
    df = pd.DataFrame(np.asarray(probs, dtype=np.float64), columns=PNG_CLASSES)
    df.insert(0, "target", y)
    df.insert(0, "fold", fold)
    df.insert(0, "id", ids if ids is not None else [f"img{i:03d}" for i in range(len(y))])
    return df

@pytest.fixture(scope="module")
def png_comp(tmp_path_factory):
    """A 3-class competition of 16 px digit scans: 12 train images per class (PNG), 6 test images
    made left-right symmetric (so hflip leaves them unchanged), 2 folds."""
    root = tmp_path_factory.mktemp("digits")
    d = load_digits()
    rng = np.random.default_rng(0)

    def save(img, path):
        a = np.kron((img * 255 / 16).round().astype(np.uint8), np.ones((2, 2), np.uint8))
        Image.fromarray(np.repeat(a[..., None], 3, axis=2)).save(path)

    for name, digit in zip(PNG_CLASSES, (0, 1, 7)):
        (root / "train" / name).mkdir(parents=True)
        for k, i in enumerate(rng.choice(np.flatnonzero(d.target == digit), 12, replace=False)):
            save(d.images[i], root / "train" / name / f"{name[0]}{k:02d}.png")
    (root / "test").mkdir()
    ids = [f"T{k}" for k in range(6)]
    for k, i in enumerate(rng.choice(len(d.images), 6, replace=False)):
        save(np.maximum(d.images[i], d.images[i][:, ::-1]), root / "test" / f"{ids[k]}.png")
    sample = pd.DataFrame(np.full((6, 3), 1 / 3), columns=PNG_CLASSES)
    sample.insert(0, "ID", ids[::-1])  # sample order differs from file order
    sample.to_csv(root / "sample_submission.csv", index=False)
    c = scan_competition(root, verbose=False)
    make_folds(c, n_folds=2)
    return c

@pytest.fixture(scope="module")
def png_run(png_comp, tmp_path_factory):
    """A completed fold-0 run of test_resnet (random weights) with shuffled oof.csv rows."""
    d = tmp_path_factory.mktemp("runs") / "tiny_f0"
    d.mkdir()
    params = {"data_dir": str(png_comp.root), "backbone": "test_resnet", "fold": 0, "n_folds": 2, "precision": "fp32",
              "img_size": 16, "batch_size": 4, "pool": "avg", "cache": False, "run_name": "tiny_f0"}
    (d / "params.yaml").write_text(yaml.safe_dump(params))
    torch.manual_seed(0)
    model, _ = create_backbone("test_resnet", 3)
    save_weights(model, d / "model.safetensors")
    folds = pd.read_csv(png_comp.root / "folds.csv", dtype={"id": str}).merge(png_comp.train, on="id")
    va = folds[folds["fold"] == 0].sample(frac=1, random_state=1)
    oof_table(va["target"], np.full((len(va), 3), 1 / 3), ids=va["id"].to_numpy()).to_csv(d / "oof.csv", index=False)
    test = pd.DataFrame(np.full((6, 3), 1 / 3), columns=PNG_CLASSES)
    test.insert(0, "id", png_comp.test["id"].to_numpy())
    test.to_csv(d / "test.csv", index=False)
    (d / "metrics.json").write_text(json.dumps({"complete": True, "log_loss": 1.1, "accuracy": 0.3,
                                               "f1_macro": 0.2, "best_epoch": 0, "minutes": 0.1}))
    return d


class Interrupt(Callback):
    """Stands in for Ctrl+C / a lost machine: dies at the start of epoch ``at``."""
    def __init__(self, at):
        self.at = at

    def before_epoch(self):
        if self.epoch == self.at:
            raise KeyboardInterrupt


class SpoilEpoch(Callback):
    """Noise on the weights once epoch ``at`` (None: the last) has trained, before it is validated:
    that epoch then scores worst."""
    def __init__(self, at=None):
        self.at = at

    def after_train(self):
        if self.epoch == (self.n_epoch - 1 if self.at is None else self.at):
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for p in self.learn.model.parameters():
                    p.add_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.fixture(scope="session")
def digits_runs(_digits_source, tmp_path_factory):
    """(data folder, runs folder) of a copy of the digits demo with both folds of test_resnet trained
    (16 px, 3 epochs, fp32, from the image cache): runs to re-predict, blend and validate. Copy the runs
    folder before writing into it."""
    from lib.core.config import TrainConfig
    from lib.train.loop import train_fold

    tmp = tmp_path_factory.mktemp("digits_runs")
    data, runs = shutil.copytree(_digits_source, tmp / "digits"), tmp / "runs"
    for fold in (0, 1):
        train_fold(TrainConfig(data_dir=str(data), backbone="test_resnet", img_size=16, batch_size=32, epochs=3,
                               lr=0.01, precision="fp32", hflip=False, n_folds=2, fold=fold, run_name=f"tres_f{fold}",
                               runs_dir=str(runs), progress=False, verbose=False))
    return data, runs
