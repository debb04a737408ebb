"""lib.insight.diffs: two or more submissions (files, a run folder) that differ in known rows: the pair table,
the differing rows with each one's class and probability, the confusion table and the image gallery."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lib.insight.diffs import diff_gallery, diff_submissions


def _probs_submission(comp, labels, path, p_top=0.8):
    """A probability submission shaped like the sample: p_top on ``labels`` (per test row, test order)."""
    c = len(comp.classes)
    p = np.full((len(labels), c), (1 - p_top) / (c - 1))
    p[np.arange(len(labels)), labels] = p_top
    df = pd.DataFrame(p, columns=comp.classes)
    df.insert(0, "ID", comp.test["id"].to_numpy())
    df.sample(frac=1, random_state=0).to_csv(path, index=False)   # row order is not the sample's: read by ID
    return path


def test_diff_table_and_gallery_of_submissions_that_differ_in_known_rows(png_comp, png_run, tmp_path):
    comp = png_comp
    base = np.array([0, 1, 2, 0, 1, 2])
    other = base.copy()
    other[[1, 4]] = [2, 0]                                       # rows 1 and 4 differ
    a = _probs_submission(comp, base, tmp_path / "ours.csv")
    b = _probs_submission(comp, other, tmp_path / "theirs.csv", p_top=0.6)
    labels = pd.DataFrame({"ID": comp.test["id"], "label": np.asarray(comp.classes)[base]})
    labels.to_csv(tmp_path / "labels.csv", index=False)          # a label file naming the same classes as ours

    d = diff_submissions([a, b, {"path": str(tmp_path / "labels.csv"), "name": "lee"}], comp, save_dir=tmp_path)
    pairs = d.pairs.set_index(["a", "b"])
    assert pairs.loc[("ours", "theirs"), "differ"] == 2 and pairs.loc[("ours", "lee"), "differ"] == 0
    assert pairs.loc[("theirs", "lee"), "share_differ"] == pytest.approx(2 / 6)
    ids = comp.test["id"].to_numpy()
    assert sorted(d.rows["id"]) == sorted(ids[[1, 4]])
    row = d.rows.set_index("id").loc[ids[1]]
    assert (row["ours"], row["theirs"], row["lee"]) == (comp.names[1], comp.names[2], comp.names[1])
    assert row["ours_p"] == pytest.approx(0.8) and row["theirs_p"] == pytest.approx(0.6) and "lee_p" not in d.rows
    cm = d.confusion[("ours", "theirs")]
    assert cm.loc[comp.names[1], comp.names[2]] == 1 and cm.loc[comp.names[1], comp.names[0]] == 1
    assert int(np.trace(cm.reindex(index=comp.names, columns=comp.names, fill_value=0).to_numpy())) == 4
    assert (tmp_path / "diff_rows.csv").exists() and (tmp_path / "diff_pairs.csv").exists()

    fig = diff_gallery(d, comp)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 2
    captions = [ax.get_title() for ax in shown]
    assert all("ours:" in c and "theirs:" in c and "lee:" in c for c in captions)
    assert any("(0.60)" in c for c in captions)

    run = diff_submissions([a, png_run], comp)                    # a run folder: its test.csv, uniform probabilities
    assert run.pairs["differ"].iloc[0] == int((base != 0).sum())  # a uniform row's argmax is the first class
    with pytest.raises(ValueError, match="give two submissions or more"):
        diff_submissions([a], comp)
    with pytest.raises(ValueError, match="share a name"):
        diff_submissions([a, a], comp)
