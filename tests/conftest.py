"""Shared fixtures: a tiny real competition (scikit-learn's digits through lib.demo)."""
from __future__ import annotations

import shutil

import matplotlib
import pytest

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
