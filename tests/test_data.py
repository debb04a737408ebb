"""lib.data on real images and on a folder of everything that goes wrong in real competitions."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lib.data import BadImageError, make_folds, read_image, scan_competition


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


@pytest.mark.parametrize("name", ["cmyk.jpg", "deep16.png", "palette.png"])
def test_any_mode_becomes_rgb(messy, name):
    img = read_image(messy / "train" / "기아 K5" / name)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.std() > 0


def test_exif_rotation_and_reduced_decode(messy):
    img = read_image(messy / "train" / "현대 아반떼" / "exif_rotated.jpg")
    assert img.shape[:2] == (80, 40)
    big = messy / "big.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (960, 1280, 3), np.uint8)).save(big)
    small = read_image(big, size=224)
    assert 224 <= min(small.shape[:2]) < 480                                 # decoded at 1/2 or 1/4 scale
    with pytest.raises(BadImageError, match="truncated.jpg"):
        read_image(messy / "train" / "기아 K5" / "truncated.jpg")


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
