"""lib.data on real images and on a folder of everything that goes wrong in real competitions."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from lib.data import scan_competition
from lib.folds import make_folds
from lib.images import BadImageError


def test_messy_folder_reports_every_problem(messy):
    comp = scan_competition(messy, verbose=False)
    probs = comp.problems
    text = lambda name: " ".join(probs.loc[probs["path"].str.contains(name, regex=False), "problem"])  # noqa: E731
    assert "cannot decode" in text("truncated.jpg")
    assert "zero-byte" in text("zero.jpg")
    assert "cannot decode" in text("notes.jpg")
    assert "not an image extension" in text("readme.txt")
    assert "empty class folder" in text("empty")
    assert "1 usable image" in text("single")
    assert "t_missing" in " ".join(probs["problem"])
    ids = set(comp.train["id"])
    assert {"cmyk", "deep16", "palette", "exif_rotated", "사진 1"} <= ids      # odd but readable: kept
    assert not {"truncated", "zero", "notes"} & ids                           # unreadable: out, listed
    # class order follows sample_submission, not the folder listing
    assert comp.classes == ["기아 K5", "single", "empty", "현대 아반떼"]
    row = comp.train.set_index("id").loc["exif_rotated"]
    assert (row.width, row.height) == (40, 80)                               # EXIF orientation applied
    with pytest.raises(BadImageError, match="problem"):
        scan_competition(messy, verbose=False, on_bad="raise")


def test_classes_never_shift(digits_comp, tmp_path):
    root = tmp_path / "c"
    shutil.copytree(digits_comp, root)
    for f in ("classes.json", "folds.csv", "folds.json", "scan.csv"):
        (root / f).unlink(missing_ok=True)
    comp = scan_competition(root, verbose=False)
    saved = json.loads((root / "classes.json").read_text())["classes"]
    assert saved == comp.classes == list(pd.read_csv(root / "sample_submission.csv").columns[1:])
    sample = pd.read_csv(root / "sample_submission.csv")
    sample[list(reversed(sample.columns[1:]))].assign(ID=sample["ID"])  # a reordered copy would shift indices
    reordered = sample[["ID"] + list(reversed(sample.columns[1:]))]
    reordered.to_csv(root / "sample_submission.csv", index=False)
    with pytest.raises(ValueError, match="classes.json"):
        scan_competition(root, verbose=False)


def test_labels_csv_with_one_based_numeric_labels(digits_comp, tmp_path):
    """Labels 1..10 in a CSV: names stay the label values, indices come from the order, no shift."""
    comp = scan_competition(digits_comp, verbose=False)
    root = tmp_path / "csvcomp"
    (root / "train").mkdir(parents=True)
    rows = []
    for r in comp.train.itertuples():
        shutil.copy(r.path, root / "train" / f"{r.id}.jpg")
        rows.append({"image_id": r.id, "label": r.target + 1})
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    comp2 = scan_competition(root, verbose=False)
    assert comp2.classes == [str(i) for i in range(1, 11)]                  # numeric order, not "1","10","2"
    merged = comp2.train.merge(comp.train, on="id")
    assert (merged["target_x"] == merged["target_y"]).all()


def test_folds_stratified_written_once_and_reused(digits_comp):
    comp = scan_competition(digits_comp, verbose=False)
    (digits_comp / "folds.csv").unlink(missing_ok=True)
    (digits_comp / "folds.json").unlink(missing_ok=True)
    a = make_folds(comp, n_folds=4, seed=1)
    assert sorted(a["fold"].unique()) == [0, 1, 2, 3]
    per = pd.crosstab(a["target"], a["fold"])
    assert (per.max(axis=1) - per.min(axis=1) <= 1).all()                   # stratified
    b = make_folds(comp, n_folds=4, seed=1)
    assert (a["fold"].to_numpy() == b["fold"].to_numpy()).all()
    with pytest.raises(ValueError, match="folds.csv"):
        make_folds(comp, n_folds=5, seed=1)
    g = make_folds(comp.__class__(comp.root, comp.classes, comp.train.assign(grp=np.arange(len(comp.train)) // 4),
                                  comp.test), n_folds=4, seed=1, group_col="grp", force=True)
    assert g.groupby("grp")["fold"].nunique().max() == 1                   # groups never split


def test_small_class_warning(digits_comp):
    comp = scan_competition(digits_comp, verbose=False)
    small = comp.train.groupby("target").head(20)
    small = pd.concat([small[small["target"] != 0], small[small["target"] == 0].head(2)])
    with pytest.warns(UserWarning, match="fewer images than 5 folds"):
        make_folds(comp.__class__(comp.root, comp.classes, small, comp.test), n_folds=5, force=True)
    (comp.root / "folds.csv").unlink()
