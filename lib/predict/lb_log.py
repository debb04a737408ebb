"""Each submission's CV beside the public leaderboard score it got, kept as a log to watch the gap.

    add_lb_score("runs/submission.csv", 0.133, runs_dir="runs")   # the score the leaderboard showed
    read_lb_log("runs")                                           # one row per submission, oldest first

The log is ``<runs_dir>/lb_log.csv``: time (UTC, when the score was added), submission (its path),
sha1 (of its bytes: a file renamed or copied is still known, one rewritten is another submission),
metric, cv (the score the cross-validation expected), lb (the public leaderboard's), gap (lb - cv,
in the metric's units: for log loss > 0 means the leaderboard is worse than CV), cv_from (where the
CV came from) and note. The CV is found by the file's sha1 in the expected scores the kit wrote
beside the submissions it made (``<runs_dir>/ensemble/*expected_score.json``: 04's
``expected_score.json`` for ``submission.csv``, ``team_expected_score.json`` for the team blend of
``python -m lib.ops.team blend``), each recording the sha1 of its submission (``expected_record``);
any other file needs its CV given.
"""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd

from lib.core.io import file_sha1, read_json, write_csv
from lib.core.metrics import METRICS, get_metric
from lib.core.paths import relative, resolve

LB_LOG = "lb_log.csv"
LB_COLUMNS = ["time", "submission", "sha1", "metric", "cv", "lb", "gap", "cv_from", "note"]


def expected_record(expected: dict, submission) -> dict:
    """``expected`` (``lib.predict.calibrate.expected_score``) with the submission it is for: its path
    and the sha1 of its bytes (what ``submission_cv`` matches a leaderboard score to)."""
    return {**expected, "submission": str(relative(submission)), "submission_sha1": file_sha1(resolve(submission))}


def submission_cv(submission, runs_dir="runs") -> dict | None:
    """{"metric", "cv", "cv_from"} of the expected score recorded for this very file (by sha1) in
    ``<runs_dir>/ensemble/*expected_score.json``; None when none is."""
    sha1 = file_sha1(resolve(submission))
    for p in sorted((resolve(runs_dir) / "ensemble").glob("*expected_score.json")):
        e = read_json(p)
        if e.get("submission_sha1") == sha1:
            return {"metric": e["metric"], "cv": float(e["expected"]), "cv_from": str(relative(p))}
    return None


def read_lb_log(runs_dir="runs") -> pd.DataFrame:
    """The log (LB_COLUMNS, oldest first; ``time`` as UTC timestamps); empty when none was written."""
    path = resolve(runs_dir) / LB_LOG
    if not path.exists():
        return pd.DataFrame(columns=LB_COLUMNS)
    log = pd.read_csv(path, dtype={"submission": str, "sha1": str, "metric": str, "cv_from": str, "note": str},
                      keep_default_na=False, na_values={"cv": [""], "lb": [""], "gap": [""]})
    missing = [c for c in LB_COLUMNS if c not in log.columns]
    if missing:
        raise ValueError(f"{path}: not a leaderboard log (missing columns {missing}); it is written by "
                         "`python -m lib.ops.team lb add`: move it away and add the scores again")
    log["time"] = pd.to_datetime(log["time"], utc=True)
    return log[LB_COLUMNS]


def _check_score(value: float, metric: str, what: str) -> float:
    value = float(value)
    top = 1.0 if get_metric(metric)[1] else np.inf  # a loss is >= 0; accuracy-type scores lie in [0, 1]
    if not (np.isfinite(value) and 0.0 <= value <= top):
        raise ValueError(f"{what} {value!r} is outside [0, {top:g}], the range of {metric}; type the number the "
                         "leaderboard shows, or give --metric")
    return value


def add_lb_score(submission, lb: float, runs_dir="runs", cv: float | None = None, metric: str | None = None,
                 note: str = "", replace: bool = False, now: datetime | None = None) -> pd.DataFrame:
    """Append ``submission``'s public leaderboard score ``lb`` to ``<runs_dir>/lb_log.csv`` (atomic)
    beside its CV: ``cv`` when given, else the expected score the kit recorded for this file
    (``submission_cv``). ``metric`` when given, else the recorded one's, else the log's if it holds
    one only. A file logged before is refused (``replace``: its row is replaced, at its time unless ``now``).
    Returns the log."""
    path = resolve(submission)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such submission file; give the CSV you submitted")
    found = submission_cv(path, runs_dir)
    if cv is None and found is None:
        raise ValueError(f"{relative(path)}: no CV recorded for this file (sha1 {file_sha1(path)[:12]}) in "
                         f"{relative(resolve(runs_dir) / 'ensemble')}/*expected_score.json: 04 records the one "
                         "of the submission.csv it writes, `python -m lib.ops.team blend` the one of its team "
                         "blend; this file is neither (or was rewritten since): give its CV with --cv")
    log = read_lb_log(runs_dir)
    known = sorted(set(log["metric"]))
    metric = metric or (found["metric"] if found else known[0] if len(known) == 1 else None)
    if metric is None:
        raise ValueError(f"{relative(path)}: which metric are --cv and the leaderboard score in? give --metric "
                         f"(one of {sorted(METRICS)})")
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r}: choose one of {sorted(METRICS)}")
    if found and cv is None and found["metric"] != metric:
        raise ValueError(f"{relative(path)}: its recorded CV ({found['cv_from']}) is in {found['metric']}, not "
                         f"{metric}; drop --metric or give the CV in {metric} with --cv")
    cv_value = _check_score(cv if cv is not None else found["cv"], metric, "CV")
    lb_value = _check_score(lb, metric, "leaderboard score")
    sha1 = file_sha1(path)
    t = pd.Timestamp(now or datetime.now(timezone.utc))
    if (log["sha1"] == sha1).any():
        first = log.loc[log["sha1"] == sha1].iloc[0]
        if not replace:
            raise ValueError(f"{relative(path)} is logged already (as {first['submission']}, "
                             f"{first['time']:%Y-%m-%d %H:%M}, lb {first['lb']}): pass --replace to correct its score")
        t = first["time"] if now is None else t  # a corrected score keeps its submission's place in time
        log = log[log["sha1"] != sha1]
    row = {"time": t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC"),
           "submission": str(relative(path)), "sha1": sha1, "metric": metric, "cv": cv_value, "lb": lb_value,
           "gap": round(lb_value - cv_value, 10), "cv_from": "given" if cv is not None else found["cv_from"],
           "note": note or ""}
    log = pd.concat([log, pd.DataFrame([row])], ignore_index=True) if len(log) else pd.DataFrame([row])
    log = log.sort_values("time", kind="stable").reset_index(drop=True)[LB_COLUMNS]
    write_csv(resolve(runs_dir) / LB_LOG, log.assign(time=log["time"].map(lambda t: t.isoformat(timespec="seconds"))))
    return log


def lb_table(log: pd.DataFrame) -> pd.DataFrame:
    """The log as printed: one row per submission, numbered from 1 in column ``#``, the sha1 shortened."""
    out = log.assign(sha1=log["sha1"].str[:10], time=log["time"].dt.strftime("%Y-%m-%d %H:%M"))
    out.insert(0, "#", range(1, len(out) + 1))
    return out.reset_index(drop=True)
