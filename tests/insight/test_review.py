"""lib.insight.review: the marks file, the views, and the reviewer widget driven as a front end would."""
import multiprocessing

import numpy as np
import pandas as pd
import pytest
from shared import PNG_CLASSES as CLASSES
from shared import oof_table

from lib.insight import analysis, review


def _onehot(pred, conf=0.8):
    p = np.full((len(pred), 3), (1 - conf) / 2)
    p[np.arange(len(pred)), pred] = conf
    return p


def _walk(w):
    yield w
    for c in getattr(w, "children", ()):
        yield from _walk(c)


def _oof(comp):
    y = comp.train["target"].to_numpy()
    pred = y.copy()
    pred[np.flatnonzero(y == 0)[:3]] = 1  # three 영 predicted as 일
    pred[np.flatnonzero(y == 1)[:1]] = 0  # one 일 predicted as 영
    return oof_table(y, _onehot(pred), ids=comp.train["id"].to_numpy())


def test_marks_are_set_replaced_and_cleared_atomically(tmp_path):
    path = tmp_path / "analysis" / "exclude_ids.csv"
    assert review.read_marks(path).empty and list(review.read_marks(path).columns) == review.COLUMNS
    review.set_mark(path, "a1", "wrong label", {"label": "영", "predicted": "일", "p_pred": 0.9, "model": "m"})
    review.set_mark(path, "b2", "duplicate")
    review.set_mark(path, "a1", "bad image")                          # replaces a1's mark
    df = pd.read_csv(path, dtype={"id": str})
    assert list(df.columns) == review.COLUMNS
    assert dict(zip(df["id"], df["mark"])) == {"b2": "duplicate", "a1": "bad image"}
    assert review.set_mark(path, "b2", None)["id"].tolist() == ["a1"]  # cleared
    assert not list(path.parent.glob(".*.tmp"))                        # no temporary file left behind
    with pytest.raises(ValueError, match="choose one of"):
        review.set_mark(path, "a1", "blurry")
    (tmp_path / "other.csv").write_text("name,value\nx,1\n")
    with pytest.raises(ValueError, match=r"other\.csv: not a marks file"):
        review.read_marks(tmp_path / "other.csv")


def _mark_many(path, who: str, n: int, go) -> None:
    go.wait()
    for k in range(n):
        review.set_mark(path, f"{who}{k}", "duplicate", {"model": who})


def test_two_processes_marking_one_file_lose_no_mark(tmp_path):
    """Two notebooks (two real processes, forked: no second import) mark into one file at the same moment:
    every mark is kept."""
    path, n = tmp_path / "exclude_ids.csv", 40
    review.set_mark(path, "before", "bad image")
    mp = multiprocessing.get_context("fork")
    go = mp.Barrier(2)
    procs = [mp.Process(target=_mark_many, args=(path, who, n, go)) for who in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    marks = review.read_marks(path)
    assert sorted(marks["id"]) == sorted(["before"] + [f"{who}{k}" for who in "ab" for k in range(n)])
    assert not list(tmp_path.glob(".*.tmp"))


def test_views_select_pairs_classes_and_losses(png_comp):
    oof = _oof(png_comp)
    losses = analysis.top_losses(oof, CLASSES)
    pairs = analysis.confusion_pairs(analysis.confusion_table(oof, CLASSES))
    opts = review.view_options(losses, pairs, CLASSES, CLASSES)
    assert opts[0] == (f"top losses ({len(oof)} images)", ("losses",))
    assert opts[1] == ("pair 영 <> 일 (4 errors)", ("pair", "영", "일"))
    assert [k for _, k in opts[2:]] == [("class", c) for c in CLASSES]
    pair = review.view_rows(losses, ("pair", "영", "일"))
    assert len(pair) == 4 and set(zip(pair["label"], pair["predicted"])) == {("영", "일"), ("일", "영")}
    assert pair["loss"].is_monotonic_decreasing
    assert (review.view_rows(losses, ("class", "칠 번"))["label"] == "칠 번").all()
    with pytest.raises(ValueError, match="view"):
        review.view_rows(losses, ("fold", 0))


def test_headless_runs_get_a_line_not_a_widget(png_comp, tmp_path, capsys):
    assert review.front_end() is False                                 # plain Python: no front end
    assert review.reviewer(_oof(png_comp), png_comp, tmp_path / "m.csv") is None
    assert "open this notebook in JupyterLab" in capsys.readouterr().out
    assert not (tmp_path / "m.csv").exists()


def test_reviewer_pages_and_marks_into_the_csv(png_comp, tmp_path):
    pytest.importorskip("ipywidgets")
    marks = tmp_path / "exclude_ids.csv"
    w = review.reviewer(_oof(png_comp), png_comp, marks, model="tiny", n=4, size=16, interactive=True)
    widgets = list(_walk(w))
    pick = next(x for x in widgets if x.__class__.__name__ == "Dropdown")
    nxt = next(x for x in widgets if getattr(x, "description", "") == "next >")
    grid = next(x for x in widgets if x.__class__.__name__ == "GridBox")
    label = next(x for x in widgets if x.__class__.__name__ == "Label")
    assert label.value == "page 1 / 9 (36 images)" and len(grid.children) == 4

    first = grid.children[0]
    shown_id = first.children[1].value.split("<b>")[1].split("</b>")[0]
    wrong = next(b for b in _walk(first) if getattr(b, "description", "") == "wrong label")
    wrong.click()
    df = pd.read_csv(marks, dtype={"id": str})
    assert df[["id", "mark", "model"]].values.tolist() == [[shown_id, "wrong label", "tiny"]]
    assert wrong.button_style == "danger"
    wrong.click()                                                      # a second click clears the mark
    assert pd.read_csv(marks).empty and wrong.button_style == ""

    nxt.click()
    assert label.value.startswith("page 2 / 9")
    pick.value = ("pair", "영", "일")
    assert label.value == "page 1 / 1 (4 images)" and len(grid.children) == 4 and nxt.disabled
    dup = next(b for b in _walk(grid.children[3]) if getattr(b, "description", "") == "duplicate")
    dup.click()
    again = review.reviewer(_oof(png_comp), png_comp, marks, n=4, size=16, interactive=True)  # reopened
    assert "1 image(s) marked" in list(_walk(again))[-1].value
