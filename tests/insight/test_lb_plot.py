"""lib.insight.lb_plot: a real leaderboard log (lib.predict.lb_log, two metrics) drawn point for point."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import matplotlib.dates as mdates
import numpy as np
import pytest

from lib.insight.lb_plot import plot_cv_lb
from lib.predict.lb_log import add_lb_score, read_lb_log

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


def test_each_submission_is_drawn_at_its_time_with_its_cv_lb_and_gap(tmp_path):
    rng = np.random.default_rng(0)
    for k, (metric, cv, lb) in enumerate([("log_loss", 0.06, 0.13), ("log_loss", 0.05, 0.11),
                                          ("f1_macro", 0.91, 0.88), ("log_loss", 0.045, 0.12)]):
        sub = tmp_path / f"sub{k}.csv"
        sub.write_text(f"ID,target\nx,{rng.integers(1000)}\n")
        add_lb_score(sub, lb, tmp_path, cv=cv, metric=metric, now=T0 + timedelta(hours=k))
    log = read_lb_log(tmp_path)
    fig = plot_cv_lb(log, save=tmp_path / "lb.png")
    assert (tmp_path / "lb.png").stat().st_size > 0
    (ax_ll, gap_ll), (ax_f1, gap_f1) = np.asarray(fig.axes).reshape(2, 2)  # one row per metric, in log order
    assert "log_loss" in ax_ll.get_title() and "lower is better" in ax_ll.get_title()
    assert "f1_macro" in ax_f1.get_title() and "higher is better" in ax_f1.get_title()
    for ax, gap, metric in ((ax_ll, gap_ll, "log_loss"), (ax_f1, gap_f1, "f1_macro")):
        t = log[log["metric"] == metric]
        cv_line, lb_line = ax.lines[:2]
        want_x = mdates.date2num(t["time"].dt.tz_localize(None).to_numpy())
        assert mdates.date2num(cv_line.get_xdata()) == pytest.approx(want_x)
        assert list(cv_line.get_ydata()) == pytest.approx(list(t["cv"]))
        assert list(lb_line.get_ydata()) == pytest.approx(list(t["lb"]))
        assert list(gap.lines[-1].get_ydata()) == pytest.approx(list(t["lb"] - t["cv"]))
    # the points are numbered as lb_table numbers the rows: #3 is the f1_macro submission
    assert [a.get_text() for a in ax_f1.texts] == ["#3"]


def test_an_empty_log_says_so(tmp_path):
    fig = plot_cv_lb(read_lb_log(tmp_path))
    assert "no leaderboard score" in fig.texts[0].get_text()
