"""lib.ops.demo: the demo competition has the shape real competitions ship, and only scoring reads the solution."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lib.ops.demo_data import DIGIT_CLASSES, build_demo, score_submission


def test_layout_like_a_real_competition(digits_comp):
    root = digits_comp
    classes = [d.name for d in (root / "train").iterdir()]
    assert sorted(classes) == sorted(DIGIT_CLASSES)                    # Korean folder names
    files = list((root / "train").rglob("*.jpg"))
    assert len(files) == 200
    sizes = {Image.open(f).size for f in files[:50]}
    assert len(sizes) > 5 and all(Image.open(f).mode == "RGB" for f in files[:5])
    test = pd.read_csv(root / "test.csv")
    assert list(test.columns) == ["ID", "img_path"] and len(test) == 60
    assert all((root / p).exists() for p in test["img_path"])
    sample = pd.read_csv(root / "sample_submission.csv")
    assert list(sample.columns) == ["ID"] + DIGIT_CLASSES and list(sample["ID"]) == list(test["ID"])
    assert np.allclose(sample[DIGIT_CLASSES].sum(axis=1), 1)
    assert (root / "solution.csv").exists() and not (root / "test" / "solution.csv").exists()


def test_rebuild_only_when_arguments_change(tmp_path):
    a = build_demo("digits", out=str(tmp_path), max_train_per_class=3, max_test=5, verbose=False)
    stamp = (a / "test.csv").stat().st_mtime_ns
    assert build_demo("digits", out=str(tmp_path), max_train_per_class=3, max_test=5, verbose=False) == a
    assert (a / "test.csv").stat().st_mtime_ns == stamp
    build_demo("digits", out=str(tmp_path), max_train_per_class=4, max_test=5, verbose=False)
    assert len(list((a / "train").rglob("*.jpg"))) == 40
    # a real competition folder of the demo's name is never deleted to make room
    cars = tmp_path / "cars"
    (cars / "train").mkdir(parents=True)
    (cars / "train.csv").write_text("ID,target\n")
    with pytest.raises(FileExistsError, match="not built by lib.ops.demo .*nothing was deleted"):
        build_demo("digits", out=str(tmp_path), name="cars", max_train_per_class=3, max_test=5, verbose=False)
    assert (cars / "train.csv").exists()


def test_score_submission(digits_comp):
    sol = pd.read_csv(digits_comp / "solution.csv", dtype={"ID": str})
    sample = pd.read_csv(digits_comp / "sample_submission.csv", dtype={"ID": str})
    perfect = sample.copy()
    perfect.iloc[:, 1:] = np.eye(10)[sol["target"]] * 0.99 + 0.001
    s = score_submission(digits_comp, perfect)
    assert s["test_accuracy"] == 1.0 and s["test_log_loss"] < 0.02
    assert abs(score_submission(digits_comp, sample)["test_log_loss"] - np.log(10)) < 1e-9
