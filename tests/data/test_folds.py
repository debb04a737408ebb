"""lib.data.folds: folds made once and fixed; 01_eda's duplicate groups keep every copy in its twin's fold."""
from __future__ import annotations

import numpy as np
import pandas as pd
from conftest import _jpeg, _near, _tiles
from PIL import Image

from lib.data.competition import scan_competition
from lib.data.folds import fold_settings, make_folds
from lib.insight import duplicates, image_stats


def test_planted_duplicates_land_in_one_fold(tmp_path, capsys):
    """Exact, mirrored, rescaled copies and one picture under two labels, in a folder-per-class
    competition: after 01_eda's duplicate pass, every pair shares a fold (5 folds, 5 seeds)."""
    tiles = _tiles()
    root = tmp_path / "c"
    classes = ["가", "나", "다"]
    for c in classes:
        (root / "train" / c).mkdir(parents=True)
    for k in range(60):
        _jpeg(tiles[k], root / "train" / classes[k % 3] / f"img{k:03d}.jpg")
    t = lambda k: root / "train" / classes[k % 3] / f"img{k:03d}.jpg"  # noqa: E731
    (root / "train" / classes[0] / "copy_exact.jpg").write_bytes(t(0).read_bytes())
    Image.open(t(4)).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / "train" / classes[1] / "copy_flip.jpg",
                                                                     quality=90)
    _near(t(8), root / "train" / classes[2] / "copy_scaled.jpg", 1.3, 85)
    (root / "train" / classes[1] / "copy_label.jpg").write_bytes(t(12).read_bytes())   # img012 is class 가
    pairs = [("copy_exact", "img000"), ("copy_flip", "img004"), ("copy_scaled", "img008"), ("copy_label", "img012")]
    comp = scan_competition(root, verbose=False)
    dups = duplicates.find_duplicates(comp, image_stats.image_stats(comp, workers=1))
    found = {frozenset((r.id, r.dup_of)) for r in dups.itertuples()}
    assert {frozenset(p) for p in pairs} <= found
    groups = pd.read_csv(root / "eda" / "groups.csv", dtype={"id": str})
    assert sorted(groups["id"]) == sorted(comp.train["id"]) and groups["group"].nunique() == len(groups) - 4
    for seed in range(5):
        folds = make_folds(comp, n_folds=5, seed=seed, force=True).set_index("id")["fold"]
        assert all(folds[a] == folds[b] for a, b in pairs), seed
    assert "folds keep 01_eda's duplicate groups together" in capsys.readouterr().out
    assert fold_settings(comp)["groups"] == "eda/groups.csv"


def test_folds_are_made_once_and_guarded(digits_comp):
    comp = scan_competition(digits_comp, verbose=False)
    a = make_folds(comp, n_folds=4, seed=1)
    b = make_folds(comp, n_folds=4, seed=1)
    assert a["fold"].equals(b["fold"]) and np.bincount(a["fold"]).min() >= 45
