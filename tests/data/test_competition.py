"""lib.data.competition on real images and on a folder of everything that goes wrong in real competitions."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from lib.data.competition import scan_competition
from lib.data.folds import make_folds
from lib.data.images import BadImageError


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


def test_document_competition_is_a_label_submission_with_named_classes(doc_comp):
    from lib.data.competition import open_competition
    comp = open_competition(doc_comp)
    assert comp.submission == "label" and comp.classes == [str(k) for k in range(10)]
    assert comp.label_values == list(range(10))                       # the sample holds integers
    meta = pd.read_csv(doc_comp / "meta.csv")
    assert comp.names == meta["class_name"].tolist()                  # names for plots
    assert len(comp.train) == 200 and comp.train["id"].str.endswith(".jpg").all()
    assert list(comp.test["id"]) == list(pd.read_csv(doc_comp / "sample_submission.csv")["ID"])


def _errors_without_writing(root, match):
    before = sorted(p.name for p in root.iterdir())
    with pytest.raises(ValueError, match=match):
        scan_competition(root, verbose=False)
    assert sorted(p.name for p in root.iterdir()) == before           # nothing written


def test_every_bad_input_is_an_error_naming_file_and_rows(doc_comp):
    sample = pd.read_csv(doc_comp / "sample_submission.csv")
    pd.concat([sample, pd.DataFrame({"ID": ["ghost.jpg"], "target": [0]})]).to_csv(
        doc_comp / "sample_submission.csv", index=False)                        # a row with no image
    _errors_without_writing(doc_comp, r"sample_submission.csv: 1 test id\(s\) have no image file, "
                                      r"first \['ghost.jpg'\]")
    sample.iloc[1:].to_csv(doc_comp / "sample_submission.csv", index=False)       # an image with no row
    _errors_without_writing(doc_comp, r"sample_submission.csv: 1 test image\(s\) have no row")
    pd.concat([sample, sample.iloc[[4]]]).to_csv(doc_comp / "sample_submission.csv", index=False)
    _errors_without_writing(doc_comp, r"sample_submission.csv: duplicate IDs \['.*'\] on lines \[62\]")
    sample.to_csv(doc_comp / "sample_submission.csv", index=False)
    train = pd.read_csv(doc_comp / "train.csv")
    train.loc[5, "target"] = 17                                                    # not in meta.csv
    train.to_csv(doc_comp / "train.csv", index=False)
    _errors_without_writing(doc_comp, r"train.csv: labels \['17'\] \(e.g. \['.*'\]\) are not labels of .*meta.csv")


def test_read_only_folder_gets_nothing_written(digits_comp, tmp_path, monkeypatch):
    """A read-only bind mount, as /kaggle/input: every derived file goes to the work folder."""
    import subprocess

    from lib.data.competition import open_competition
    from lib.data.folds import make_folds
    mnt = tmp_path / "ro"
    mnt.mkdir()
    for f in ("classes.json", "scan.csv"):
        (digits_comp / f).unlink(missing_ok=True)
    try:
        subprocess.run(["mount", "--bind", str(digits_comp), str(mnt)], check=True, capture_output=True)
        subprocess.run(["mount", "-o", "remount,ro,bind", str(mnt)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"no read-only bind mount here (needs root with CAP_SYS_ADMIN): {e}")
    try:
        before = sorted(str(p.relative_to(mnt)) for p in mnt.rglob("*"))
        monkeypatch.setenv("FOLDBOOK_WORK", str(tmp_path / "work"))
        comp = open_competition(mnt)
        make_folds(comp, n_folds=2)
        assert comp.work.parent == tmp_path / "work" and comp.root == mnt
        assert {"classes.json", "scan.csv", "scan_settings.json", "folds.csv"} <= {p.name for p in comp.work.iterdir()}
        assert sorted(str(p.relative_to(mnt)) for p in mnt.rglob("*")) == before
        monkeypatch.delenv("FOLDBOOK_WORK")
        from lib.core.paths import repo_root, work_dir
        assert work_dir(mnt).parent == repo_root() / "work"                  # the default for read-only input
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
