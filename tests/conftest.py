"""Shared fixtures: a tiny real competition (scikit-learn's digits through lib.demo)."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def digits_comp(tmp_path_factory):
    """A demo competition folder: 10 Korean-named classes x 20 train images, 60 test images."""
    from lib.demo import build_demo

    return build_demo("digits", out=str(tmp_path_factory.mktemp("data")), max_train_per_class=20,
                      max_test=60, verbose=False)
