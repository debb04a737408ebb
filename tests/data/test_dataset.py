"""lib.data.dataset: the pre-resized cache (build, reuse, resume, rebuild; presized, padded) and ImageDataset's
seeding."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lib.core.config import TrainConfig
from lib.core.paths import repo_root
from lib.data.augment import get_augment
from lib.data.competition import scan_competition
from lib.data.dataset import CHUNK, ImageDataset, build_cache, cache_key, image_dataset, load_resized
from lib.predict.inference import predict_fold
from lib.train.loop import train_fold


@pytest.fixture()
def comp(digits_comp):
    return scan_competition(digits_comp, verbose=False)


def test_cache_matches_decoding_and_is_reused(comp, tmp_path):
    paths = comp.train["path"].tolist()
    arr = build_cache(paths, 20, tmp_path, "train", workers=1, progress=False)
    assert arr.shape == (len(paths), 20, 20, 3) and arr.dtype == np.uint8
    assert np.array_equal(arr[7], load_resized(paths[7], 20))
    [file] = (tmp_path / "20px").glob("train-*.u8")
    mtime = file.stat().st_mtime_ns
    again = build_cache(paths, 20, tmp_path, "train", workers=1, progress=False)
    assert file.stat().st_mtime_ns == mtime and np.array_equal(arr, again)
    other = build_cache(paths, 24, tmp_path, "train", workers=1, progress=False)   # another size: its own
    assert other.shape[1] == 24 and file.exists()
    fewer = build_cache(paths[:-3], 20, tmp_path, "train", workers=1, progress=False)  # other files: rebuilt
    assert len(fewer) == len(paths) - 3 and np.array_equal(fewer[5], arr[5])
    assert [f.name for f in (tmp_path / "20px").glob("train*.u8*")] == [f"train-{cache_key(paths[:-3], 20)}.u8"]


# Maps the cache as a run does, says so, waits for a line on stdin (the file list changes meanwhile),
# then reads every image again and says whether they are still the images it mapped.
READER = """
import sys
import numpy as np
from lib.data.dataset import build_cache, load_resized
cache, size, paths = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
arr = build_cache(paths, size, cache, "train", workers=1, progress=False)
want = np.stack([load_resized(p, size) for p in paths])
assert np.array_equal(arr, want)
print("mapped", flush=True)
sys.stdin.readline()
got = np.array(arr)
bad = (got != want).reshape(len(got), -1).any(axis=1)
zero = got.reshape(len(got), -1).max(axis=1) == 0
print("same" if not bad.any() else f"{bad.sum()} of {len(got)} images changed, {zero.sum()} all zeros", flush=True)
"""


@pytest.mark.parametrize("size", [8, 64])
def test_a_run_reading_the_cache_keeps_its_pixels_while_the_file_list_changes(comp, tmp_path, size):
    """A second process has the cache mapped (a run training) when another run finds a changed file list
    and builds the cache anew: the reader still reads the images it mapped (a rebuild in place gave it
    zeros or the new list's images at 8 px, and killed it with SIGBUS at 64 px, its file truncated)."""
    paths = comp.train["path"].tolist()
    reader = subprocess.Popen([sys.executable, "-c", READER, str(tmp_path), str(size), *paths], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=repo_root(),
                              env={**os.environ, "PYTHONPATH": str(repo_root())})
    try:
        assert reader.stdout.readline().strip() == "mapped"
        fewer = build_cache(paths[3:], size, tmp_path, "train", workers=1, progress=False)  # 3 images gone
        out, _ = reader.communicate("go\n", timeout=120)
    finally:
        reader.kill()
    assert reader.returncode == 0, f"the reader died (signal {-reader.returncode})" if reader.returncode < 0 else out
    assert out.strip() == "same"
    assert np.array_equal(fewer[0], load_resized(paths[3], size))                  # the new list, from row 0
    assert not (tmp_path / f"{size}px" / f"train-{cache_key(paths, size)}.u8").exists()  # the old file: deleted


def test_interrupted_cache_build_resumes(comp, tmp_path, monkeypatch):
    import lib.data.dataset as D

    paths = (comp.train["path"].tolist() * 6)[: CHUNK + 40]           # two chunks
    calls = []
    real = D._cache_chunk

    def dies_on_second(args):
        calls.append(args[2])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(args)

    monkeypatch.setattr(D, "_cache_chunk", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        build_cache(paths, 16, tmp_path, "t", workers=1, progress=False)
    key = cache_key(paths, 16)
    assert not (tmp_path / "16px" / f"t-{key}.u8").exists()           # no complete file to map
    assert (tmp_path / "16px" / f"t-{key}.u8.part").exists()
    calls.clear()
    monkeypatch.setattr(D, "_cache_chunk", lambda args: calls.append(args[2]) or real(args))
    arr = build_cache(paths, 16, tmp_path, "t", workers=1, progress=False)
    assert calls == [CHUNK]                                           # only the missing chunk was built
    assert np.array_equal(arr[CHUNK + 5], load_resized(paths[CHUNK + 5], 16))


def test_augmentation_depends_on_seed_epoch_and_index_only(comp, tmp_path):
    paths, y = comp.train["path"].tolist(), comp.train["target"].to_numpy()
    cache = build_cache(paths, 24, tmp_path, "train", workers=1, progress=False)
    tfm = get_augment("heavy", 24)
    a = ImageDataset(paths, y, tfm, 24, cache, seed=1)
    b = ImageDataset(paths, y, get_augment("heavy", 24), 24, None, seed=1)  # decoding path, fresh pipeline
    x0, t0 = a[3]
    assert x0.shape == (3, 24, 24) and int(t0) == y[3]
    for i in (3, 4, 3):
        assert np.allclose(a[i][0], b[i][0], atol=1e-5)               # same (seed, epoch, i): same image
    a.epoch = 1
    assert not np.allclose(a[3][0], x0)                               # the next epoch augments anew
    unlabelled = ImageDataset(paths[:2], None, tfm, 24, cache)
    assert int(unlabelled[0][1]) == -1
    with pytest.raises(ValueError, match="targets"):
        ImageDataset(paths, y[:3])


def _dark_box(img: np.ndarray) -> tuple[int, int]:
    """(height, width) of the box around the image's dark pixels."""
    ys, xs = np.nonzero(img.mean(axis=2) < 128)
    return int(np.ptp(ys)) + 1, int(np.ptp(xs)) + 1


def test_pad_keeps_a_portrait_page_in_proportion_and_caches_apart(tmp_path):
    page = np.full((120, 60, 3), 255, np.uint8)           # a portrait page, white, with a black square on it
    page[40:80, 12:52] = 0
    path = tmp_path / "page.png"
    Image.fromarray(page).save(path)
    squash, pad = load_resized(str(path), 30), load_resized(str(path), 30, "pad")
    assert _dark_box(squash) == (10, 20)                                # squashed: the square is 2x too wide
    assert _dark_box(pad) == (10, 10)                                   # padded: still a square
    assert np.array_equal(pad[:, 7:22], cv2.resize(page, (15, 30), interpolation=cv2.INTER_AREA))  # the page,
    assert (pad[:, :7] == 255).all() and (pad[:, 22:] == 255).all()     # centred, margins in the page's white
    arr = build_cache([str(path)], 30, tmp_path / "cache", "train", workers=1, progress=False, resize="pad")
    assert np.array_equal(arr[0], pad) and (tmp_path / "cache" / "30px-pad").is_dir()
    plain = build_cache([str(path)], 30, tmp_path / "cache", "train", workers=1, progress=False)
    assert np.array_equal(plain[0], squash)                             # another cache: neither replaced
    assert np.array_equal(build_cache([str(path)], 30, tmp_path / "cache", "train", workers=1, progress=False,
                                      resize="pad")[0], pad)
    with pytest.raises(ValueError, match="resize 'crop'"):
        load_resized(str(path), 30, "crop")


def test_presize_caches_larger_and_the_model_still_sees_img_size(digits_comp):
    comp = scan_competition(digits_comp, verbose=False)
    cfg = TrainConfig(data_dir=str(digits_comp), img_size=16, presize=1.25, resize="pad", progress=False)
    data_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    rows = comp.train.head(5)
    train = image_dataset(cfg, comp, "train", rows, "light", data_cfg)
    valid = image_dataset(cfg, comp, "train", rows, "none", data_cfg)
    assert train.cache.shape[1:] == (20, 20, 3) and (digits_comp / "cache" / "20px-pad").is_dir()
    assert train.image(0).shape == (20, 20, 3) and np.array_equal(train.image(0), load_resized(rows["path"].iloc[0],
                                                                                                20, "pad"))
    assert train[0][0].shape == valid[0][0].shape == (3, 16, 16)         # cropped / resized to img_size
    plain = image_dataset(cfg.replace(presize=1.0, resize="squash"), comp, "train", rows, "none", data_cfg)
    assert plain.cache.shape[1:] == (16, 16, 3) and (digits_comp / "cache" / "16px").is_dir()


def test_a_presized_padded_run_trains_and_predicts(digits_comp, tmp_path):
    m = train_fold(TrainConfig(data_dir=str(digits_comp), backbone="test_resnet", img_size=16, presize=1.25,
                               resize="pad", batch_size=32, epochs=1, precision="fp32", n_folds=2,
                               runs_dir=str(tmp_path / "runs"), progress=False, verbose=False))
    assert m["complete"] and np.isfinite(m["log_loss"])
    assert {p.name for p in (digits_comp / "cache").iterdir()} == {"20px-pad"}  # train and test, 1.25 x 16
    run = tmp_path / "runs" / "test_resnet_f0"
    again = predict_fold(run, split="oof")                                       # re-predicted as it trained
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
    classes = json.loads((run / "classes.json").read_text())["classes"]
    assert np.allclose(again[classes].to_numpy(), oof[classes].to_numpy(), atol=1e-6)
