"""lib.insight.browse: OOF mistakes, test predictions and noisy-label candidates exported into one folder per
class (symbolic links, or copies), with a manifest; re-exports leave nothing stale; the competition
folder and foreign folders are never written to."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from lib.insight import browse


def test_oof_mistakes_by_true_and_predicted_class(png_comp, png_run, tmp_path):
    comp = png_comp
    oof = pd.read_csv(png_run / "oof.csv", dtype={"id": str})   # uniform probabilities: every row predicts class 0
    out = tmp_path / "browse" / "oof_mistakes"
    m = browse.export_oof_mistakes(oof, comp, out)
    wrong = oof[oof["target"] != 0]
    assert sorted(m["id"]) == sorted(wrong["id"]) and len(m) > 0
    assert set(m["folder"]) == {f"{t:02d} {comp.names[t]} -> 00 {comp.names[0]}" for t in wrong["target"]}
    for r in m.itertuples():
        link = out / r.file
        assert link.is_symlink() and os.readlink(link) == r.source and link.read_bytes()
        assert r.source == comp.train.set_index("id").loc[r.id, "path"]
    assert (m["how"] == "symlink").all() and (out / "manifest.csv").exists()
    assert pd.read_csv(out / "manifest.csv", dtype={"id": str})["id"].tolist() == m["id"].tolist()

    right = oof.copy()                                           # a better model: one mistake left
    cols = comp.classes
    right[cols] = np.eye(3)[right["target"]] * 0.9 + 0.1 / 3
    first = right.index[right["target"] == 1][0]
    right.loc[first, cols] = [0.1, 0.1, 0.8]
    again = browse.export_oof_mistakes(right, comp, out)
    assert len(again) == 1 and len(list(out.rglob("*.png"))) == 1   # the earlier export's links are gone
    assert not list(tmp_path.joinpath("browse").glob(".*.tmp"))


def test_test_predictions_and_noisy_labels_as_copies(png_comp, tmp_path):
    comp = png_comp
    labels = np.array([2, 0, 1, 2, 2, 0])
    p = np.full((6, 3), 0.1)
    p[np.arange(6), labels] = 0.8
    sub = pd.DataFrame(p, columns=comp.classes)
    sub.insert(0, "ID", comp.test["id"].to_numpy())
    m = browse.export_test_predictions(sub, comp, tmp_path / "test_predicted", link=False)
    assert (m["how"] == "copy").all()
    for k in range(3):
        folder = tmp_path / "test_predicted" / browse.folder_name(k, comp.names[k])
        files = sorted(f.name for f in folder.iterdir())
        assert files == sorted(f"{i}.png" for i in comp.test["id"][labels == k])
        assert not any(f.is_symlink() for f in folder.iterdir())
    assert m["p_predicted"].tolist() == [0.8] * 6

    noisy = pd.DataFrame({"id": comp.train["id"][:2], "label": comp.classes[0], "predicted": comp.classes[2],
                          "p_label": 0.01, "p_pred": 0.95, "loss": 4.6})
    n = browse.export_noisy_labels(noisy, comp, tmp_path / "noisy")
    assert set(n["folder"]) == {f"00 {comp.names[0]} -> 02 {comp.names[2]}"} and len(n) == 2
    assert "p_pred" in n.columns


def test_never_writes_into_the_competition_or_a_foreign_folder(png_comp, png_run, tmp_path):
    oof = pd.read_csv(png_run / "oof.csv", dtype={"id": str})
    before = sorted(p for p in png_comp.root.rglob("*"))
    with pytest.raises(ValueError, match="inside the competition folder"):
        browse.export_oof_mistakes(oof, png_comp, png_comp.root / "browse")
    assert sorted(p for p in png_comp.root.rglob("*")) == before
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="not an export of lib.insight.browse"):
        browse.export_oof_mistakes(oof, png_comp, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    assert browse.folder_name(3, 'a/b:c?') == "03 a_b_c_"
