"""lib.predict.lb_log: 04's submission (write_ensemble on a real PNG competition) found by its sha1 when its
leaderboard score is logged, wherever the file is copied; a rewritten file or a teammate's needs its CV; the
log kept in time order, corrected with replace, refused on a duplicate, a bad score or a foreign CSV."""
from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from shared import PNG_CLASSES as CLASSES
from shared import oof_table

from lib.core.io import file_sha1
from lib.predict.calibrate import expected_score
from lib.predict.crossfit import fit_blend
from lib.predict.lb_log import LB_COLUMNS, add_lb_score, lb_table, read_lb_log, submission_cv
from lib.predict.submission import write_ensemble

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture()
def submitted(png_comp, tmp_path):
    """(runs folder, the submission.csv 04 wrote there with its expected score)."""
    rng = np.random.default_rng(0)
    y, ids = png_comp.train["target"].to_numpy(), png_comp.train["id"].to_numpy()
    folds = pd.read_csv(png_comp.root / "folds.csv", dtype={"id": str}).set_index("id").loc[ids, "fold"].to_numpy()
    oofs = {m: oof_table(y, 0.5 * np.eye(3)[y] + 0.5 * rng.dirichlet(np.ones(3), size=len(y)), ids, folds)
            for m in ("a", "b")}
    b = fit_blend(oofs, CLASSES, verbose=False)
    expected = expected_score(b, n_test=len(png_comp.test))
    tests = {m: pd.concat([pd.DataFrame({"id": png_comp.test["id"].to_numpy()}),
                           pd.DataFrame(rng.dirichlet(np.ones(3), size=6), columns=CLASSES)], axis=1) for m in oofs}
    runs = tmp_path / "runs"
    write_ensemble(b, tests, png_comp, runs, runs / "submission.csv", expected=expected)
    return runs, runs / "submission.csv", expected


def test_04s_submission_finds_its_cv_by_its_bytes(submitted, tmp_path):
    runs, sub, expected = submitted
    found = submission_cv(sub, runs)
    assert found["cv"] == pytest.approx(expected["expected"]) and found["metric"] == expected["metric"]
    copy = shutil.copy(sub, tmp_path / "what_i_uploaded.csv")  # renamed before uploading: still known
    log = add_lb_score(copy, expected["expected"] + 0.07, runs, note="first", now=T0)
    assert list(log.columns) == LB_COLUMNS and len(log) == 1
    row = log.iloc[0]
    assert row["sha1"] == file_sha1(sub) and row["cv"] == pytest.approx(expected["expected"])
    assert row["gap"] == pytest.approx(0.07) and row["cv_from"].endswith("ensemble/expected_score.json")
    back = read_lb_log(runs)
    assert back.iloc[0]["time"] == pd.Timestamp(T0) and back.iloc[0]["note"] == "first"
    assert back[["cv", "lb", "gap"]].to_numpy() == pytest.approx(log[["cv", "lb", "gap"]].to_numpy().astype(float))


def test_a_file_without_recorded_cv_needs_it_given(submitted, tmp_path):
    runs, sub, expected = submitted
    changed = tmp_path / "edited.csv"
    changed.write_text(sub.read_text().replace("\n", "\r\n"))  # the same numbers, other bytes: another file
    with pytest.raises(ValueError, match=r"edited.csv: no CV recorded .* --cv"):
        add_lb_score(changed, 0.9, runs)
    with pytest.raises(ValueError, match="which metric"):  # nothing logged yet says the metric
        add_lb_score(changed, 0.9, runs, cv=0.8)
    log = add_lb_score(changed, 0.9, runs, cv=0.8, metric="log_loss", now=T0)
    assert log.iloc[0]["cv_from"] == "given" and log.iloc[0]["gap"] == pytest.approx(0.1)
    # the log now says log_loss: a later given CV takes it
    log = add_lb_score(sub, 1.0, runs, cv=0.7, now=T0 - timedelta(days=1))
    assert list(log["metric"]) == ["log_loss", "log_loss"] and list(log["lb"]) == [1.0, 0.9]  # in time order
    assert log.iloc[0]["cv_from"] == "given"  # a given CV wins over the recorded one
    assert lb_table(log)["#"].tolist() == [1, 2]


def test_duplicates_bad_scores_and_foreign_logs_are_refused(submitted, tmp_path):
    runs, sub, expected = submitted
    add_lb_score(sub, 0.5, runs, now=T0)
    with pytest.raises(ValueError, match=r"submission.csv is logged already .* --replace"):
        add_lb_score(sub, 0.6, runs)
    log = add_lb_score(sub, 0.6, runs, replace=True)  # a typo corrected: one row, its time kept
    assert len(log) == 1 and log.iloc[0]["lb"] == 0.6 and log.iloc[0]["time"] == pd.Timestamp(T0)
    other = tmp_path / "other.csv"
    other.write_text(sub.read_text() + "\n")
    with pytest.raises(ValueError, match=r"leaderboard score -0.1 is outside \[0, inf\], the range of log_loss"):
        add_lb_score(other, -0.1, runs, cv=0.5)
    with pytest.raises(ValueError, match=r"CV 1.2 is outside \[0, 1\], the range of accuracy"):
        add_lb_score(other, 0.9, runs, cv=1.2, metric="accuracy")
    with pytest.raises(ValueError, match="metric 'auc'"):
        add_lb_score(other, 0.9, runs, cv=0.9, metric="auc")
    assert len(read_lb_log(runs)) == 1  # nothing refused was written
    (runs / "lb_log.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"lb_log.csv: not a leaderboard log"):
        read_lb_log(runs)
