"""Shared fixtures: a tiny real competition (scikit-learn's digits through lib.demo)."""
from __future__ import annotations

import importlib.util
import shutil

import matplotlib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

matplotlib.use("Agg")  # this process only: notebook kernels keep their inline backend (plots as PNG)


@pytest.fixture(scope="session")
def _digits_source(tmp_path_factory):
    from lib.demo import build_demo

    return build_demo("digits", out=str(tmp_path_factory.mktemp("data")), max_train_per_class=20,
                      max_test=60, verbose=False)


@pytest.fixture()
def digits_comp(_digits_source, tmp_path):
    """A fresh demo competition folder per test (10 Korean-named classes x 20 train images, 60 test
    images), so one test's folds.csv or cache never leaks into another."""
    return shutil.copytree(_digits_source, tmp_path / "digits")


@pytest.fixture()
def bench_script():
    """Loads ``bench/<name>.py`` as a module (the scripts are not a package): ``bench_script("x").main([...])``."""
    from lib.paths import repo_root

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, repo_root() / "bench" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    return load


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
    sample = pd.DataFrame({"ID": ["t0", "t1", "t_missing"], "기아 K5": 0.25, "single": 0.25,
                           "empty": 0.25, "현대 아반떼": 0.25})
    sample.to_csv(root / "sample_submission.csv", index=False)
    return root
