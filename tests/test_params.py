"""Every recipe in params/ names only 02_train parameters, with values lib accepts."""
from __future__ import annotations

import ast

import nbformat
import pytest
import timm
import yaml

from lib.augment import AUGMENTATIONS
from lib.losses import LOSSES
from lib.paths import repo_root

RECIPES = sorted((repo_root() / "params").rglob("*.yaml"))


def _notebook_parameters() -> set[str]:
    nb = nbformat.read(repo_root() / "notebooks" / "02_train.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    return {t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign) for t in node.targets}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_is_valid(path):
    rec = yaml.safe_load(path.read_text())
    unknown = set(rec) - _notebook_parameters()
    assert not unknown, f"{path.name}: not parameters of 02_train: {unknown}"
    assert timm.is_model(rec["backbone"].split(".")[0]), rec["backbone"]
    assert rec.get("aug", "light") in AUGMENTATIONS and rec.get("loss", "ce") in LOSSES
    assert len(RECIPES) >= 7
