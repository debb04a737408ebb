"""lib.data.folds: folds made once and fixed; 01_eda's duplicate groups keep every copy in its twin's fold."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from shared import _jpeg, _near, _tiles

from lib.data.competition import scan_competition
from lib.data.folds import DuplicatesUnchecked, fold_settings, make_folds
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


def _patients_with_copies(root):
    """60 photo tiles in 3 class folders, a labels table with a ``patient`` column (3 images each), and 8
    exact copies that a labels table files under another patient: each copy links two patients."""
    tiles = _tiles()
    classes = ["a", "b", "c"]
    for c in classes:
        (root / "train" / c).mkdir(parents=True)
    rows = []
    for k in range(60):
        path = root / "train" / classes[k % 3] / f"img{k:03d}.jpg"
        _jpeg(tiles[k], path)
        rows.append({"id": path.stem, "img_path": str(path), "label": classes[k % 3], "patient": f"p{k // 3:02d}"})
    pairs = []
    for j, k in enumerate(range(0, 60, 8)[:8]):
        src = root / "train" / classes[k % 3] / f"img{k:03d}.jpg"
        dst = src.with_name(f"copy{j}.jpg")
        dst.write_bytes(src.read_bytes())
        other = f"p{(k // 3 + 7) % 20:02d}"
        rows.append({"id": dst.stem, "img_path": str(dst), "label": classes[k % 3], "patient": other})
        pairs.append((dst.stem, src.stem))
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return scan_competition(root, labels_csv="labels.csv", group_col="patient", verbose=False), pairs


def test_group_col_and_duplicate_groups_both_stay_in_one_fold(tmp_path):
    """A group column (patients) and 01_eda's duplicate groups: copies filed under another patient link the
    two patients, so every patient and every duplicate pair lands in one fold (5 seeds); folds.json records
    that every train image was checked for duplicates, and no warning is raised."""
    comp, pairs = _patients_with_copies(tmp_path / "c")
    duplicates.find_duplicates(comp, image_stats.image_stats(comp, workers=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DuplicatesUnchecked)
        for seed in range(5):
            folds = make_folds(comp, n_folds=5, seed=seed, group_col="patient", force=True, verbose=False)
            fold = folds.set_index("id")["fold"]
            assert [(a, b) for a, b in pairs if fold[a] != fold[b]] == [], seed
            assert folds.groupby("patient")["fold"].nunique().max() == 1, seed
    settings = fold_settings(comp)
    assert settings["duplicates_checked"] is True and settings["eda_images"] == settings["train_images"] == 68


def test_folds_say_loudly_when_duplicates_were_not_checked_on_every_image(tmp_path):
    """Folds made before 01_eda, and folds made after a sampled EDA (max_images), record their coverage in
    folds.json and warn (a warning, not a verbose print) each time they are used, saying what to do."""
    comp, _ = _patients_with_copies(tmp_path / "c")
    with pytest.warns(DuplicatesUnchecked, match="run 01_eda"):
        make_folds(comp, n_folds=5, group_col="patient", verbose=False)
    assert {k: fold_settings(comp)[k] for k in ("duplicates_checked", "eda_images", "train_images")} == \
        {"duplicates_checked": False, "eda_images": 0, "train_images": 68}
    duplicates.find_duplicates(comp, image_stats.image_stats(comp, max_images=30, workers=1))
    with pytest.warns(DuplicatesUnchecked, match="made before 01_eda"):   # reused: still unchecked
        make_folds(comp, n_folds=5, group_col="patient", verbose=False)
    with pytest.warns(DuplicatesUnchecked, match=r"checked 30 of the 68 train images .*max_images"):
        make_folds(comp, n_folds=5, group_col="patient", force=True, verbose=False)
    settings = fold_settings(comp)
    assert settings["duplicates_checked"] is False and settings["eda_images"] == 30
