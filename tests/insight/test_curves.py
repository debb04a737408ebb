"""lib.insight.curves: the learning curves of real tiny runs (two folds of one model, one keeping its best
epoch by monitor, one still training) read back from metrics.json and drawn with the kept epoch starred;
a run without per-epoch history named, not drawn."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from lib.core.config import TrainConfig
from lib.core.io import write_json
from lib.core.rundir import find_runs
from lib.insight.curves import curve_table, plot_learning_curves
from lib.train.loop import train_fold

TINY = dict(backbone="test_resnet", n_folds=2, img_size=16, batch_size=32, epochs=3, lr=3e-3,
            progress=False, verbose=False, num_workers=0, precision="fp32")


@pytest.fixture(scope="module")
def curve_runs(_digits_source, tmp_path_factory):
    """runs/: res_f0 (keeps its last epoch), res_f1 (keeps its best by accuracy), res_f2 (unfinished: the
    metrics.json of a run after 2 of its epochs), old_f0 (a metrics.json without per-epoch history)."""
    tmp = tmp_path_factory.mktemp("curves")
    data, runs = shutil.copytree(_digits_source, tmp / "digits"), tmp / "runs"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_fold(TrainConfig(data_dir=str(data), runs_dir=str(runs), run_name="res_f0", fold=0, **TINY))
        train_fold(TrainConfig(data_dir=str(data), runs_dir=str(runs), run_name="res_f1", fold=1,
                               best_epoch="monitor", monitor="accuracy", **TINY))
    finally:
        torch.set_num_threads(n)
    done = json.loads((runs / "res_f0" / "metrics.json").read_text())
    shutil.copytree(runs / "res_f0", runs / "res_f2")
    params = (runs / "res_f2" / "params.yaml").read_text().replace("fold: 0", "fold: 2")
    (runs / "res_f2" / "params.yaml").write_text(params)
    write_json(runs / "res_f2" / "metrics.json", {"complete": False, "epochs": done["epochs"][:2]})
    shutil.copytree(runs / "res_f0", runs / "old_f0")
    write_json(runs / "old_f0" / "metrics.json", {k: v for k, v in done.items() if k != "epochs"})
    return runs


def test_curve_table_holds_every_recorded_epoch_and_marks_the_kept_one(curve_runs):
    runs = find_runs(curve_runs, complete_only=False)
    table, missing = curve_table(runs)
    assert missing == ["old_f0"]
    for name in ("res_f0", "res_f1", "res_f2"):
        m = json.loads((curve_runs / name / "metrics.json").read_text())
        t = table[table["run_name"] == name]
        assert list(t["epoch"]) == [e["epoch"] for e in m["epochs"]]
        assert list(t["valid_loss"]) == [e["valid_loss"] for e in m["epochs"]]
        assert list(t["train_loss"]) == [e["train_loss"] for e in m["epochs"]]
        mon = m.get("monitor", "log_loss")
        assert (t["monitor"] == mon).all() and list(t["monitor_value"]) == [e[mon] for e in m["epochs"]]
        assert list(t.loc[t["kept"], "epoch"]) == ([m["weights_epoch"]] if m["complete"] else [])
    f1 = json.loads((curve_runs / "res_f1" / "metrics.json").read_text())
    assert f1["weights_epoch"] == f1["best_epoch"]  # kept by monitor: the starred epoch is the best one
    assert (table.loc[table["run_name"] == "res_f1", "monitor"] == "accuracy").all()


def test_the_figure_stars_each_kept_epoch_and_names_runs_without_history(curve_runs, tmp_path, capsys):
    runs = find_runs(curve_runs, complete_only=False)
    fig = plot_learning_curves(runs, save=tmp_path / "curves.png")
    assert "old_f0" in capsys.readouterr().out
    assert (tmp_path / "curves.png").stat().st_size > 0
    ax_loss, ax_ll, ax_acc = fig.axes  # one model, its folds monitoring log_loss or accuracy: one row of panels
    assert "log_loss" in ax_ll.get_title() and "accuracy" in ax_acc.get_title()
    stars = [ln for ln in ax_loss.lines if ln.get_marker() == "*" and len(ln.get_xdata())]
    assert len(stars) == 2  # the two finished runs; the unfinished one has no kept epoch yet
    for name in ("res_f0", "res_f1"):
        m = json.loads((curve_runs / name / "metrics.json").read_text())
        e = m["weights_epoch"]
        at = (e + 1, m["epochs"][e]["valid_loss"])
        assert any(np.allclose((ln.get_xdata()[0], ln.get_ydata()[0]), at) for ln in stars), name
    mon_stars = [ln for ln in ax_acc.lines if ln.get_marker() == "*" and len(ln.get_xdata())]
    f1 = json.loads((curve_runs / "res_f1" / "metrics.json").read_text())
    at = (f1["weights_epoch"] + 1, f1["epochs"][f1["weights_epoch"]]["accuracy"])
    assert any(np.allclose((ln.get_xdata()[0], ln.get_ydata()[0]), at) for ln in mon_stars)
    labels = [t.get_text() for t in ax_loss.get_legend().get_texts()]
    assert "fold 2 (unfinished) valid" in labels
    # every epoch of every drawn run is on the loss panel: 3 + 3 + 2 validation points
    dashed = [ln for ln in ax_loss.lines if ln.get_linestyle() == "--"]
    assert sorted(len(ln.get_xdata()) for ln in dashed) == [2, 3, 3]


def test_no_history_at_all_gives_a_note_not_an_error(curve_runs, capsys):
    runs = find_runs(curve_runs, complete_only=False)
    fig = plot_learning_curves(runs[runs["run_name"] == "old_f0"])
    assert "old_f0" in capsys.readouterr().out
    assert "no run recorded" in fig.texts[0].get_text()
