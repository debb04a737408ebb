"""The work of ``python -m lib.ops.team`` (``lib.ops.team``): teammates' files blended into one team
submission with its expected score, and the leaderboard log printed and drawn."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from lib.core.io import write_json
from lib.core.paths import relative, resolve
from lib.core.rundir import find_runs
from lib.data.competition import open_competition
from lib.insight.lb_plot import plot_cv_lb
from lib.predict.calibrate import expected_score
from lib.predict.crossfit import competition_metric
from lib.predict.lb_log import LB_LOG, expected_record, lb_table, read_lb_log
from lib.predict.team import TeamBlend, team_blend, write_team_submission

TEAM_EXPECTED = "team_expected_score.json"  # in <runs_dir>/ensemble/, beside 04's expected_score.json


def member_specs(files: list[str], oof=None, weights=None, names=None) -> list[dict]:
    """``lib.predict.team`` member specs of ``files``; ``oof``, ``weights``, ``names``: one value per
    file in order ("-" for none) or None."""
    specs = [{"path": f} for f in files]
    for key, values in (("oof", oof), ("weight", weights), ("name", names)):
        if values is None:
            continue
        if len(values) != len(files):
            raise ValueError(f"--{key}{'s' if key != 'oof' else ''}: give one value per file ({len(files)}, "
                             f"'-' for none), got {len(values)}: {values}")
        for spec, v in zip(specs, values):
            if v != "-":
                try:
                    spec[key] = float(v) if key == "weight" else v
                except ValueError:
                    raise ValueError(f"--weights: {v!r} is not a number (or '-')") from None
    return specs


def blend_files(files: list[str], data_dir, out, runs_dir="runs", oof=None, weights=None, names=None,
                metric: str | None = None) -> tuple[TeamBlend, dict | None]:
    """The team blend of ``files`` alone (``member_specs``) for the competition in ``data_dir``, in
    ``metric`` (None: the monitor of the runs in ``runs_dir`` when they agree, else log_loss), written to
    ``out`` like 04's team submission; with every member fitted on OOF, its expected score goes to
    ``<runs_dir>/ensemble/team_expected_score.json`` with the file's sha1 (what ``lb add`` finds).
    Returns (the blend, the expected score or None)."""
    comp = open_competition(data_dir)
    metric, source = competition_metric(find_runs(runs_dir, full_data=False), metric)
    print(f"metric: {metric} ({source})")
    team = team_blend({}, {}, comp, member_specs(files, oof, weights, names), metric=metric)
    write_team_submission(team, comp, out, runs_dir)
    if team.blend is None or not (team.members["how"] == "fitted on OOF").all():
        return team, None
    expected = expected_score(team.blend, n_test=len(comp.test))
    write_json(resolve(runs_dir) / "ensemble" / TEAM_EXPECTED, expected_record(expected, out))
    return team, expected


def show_log(runs_dir, log: pd.DataFrame | None = None) -> None:
    """Print the leaderboard log and draw it to ``<runs_dir>/lb_log.png``."""
    log = read_lb_log(runs_dir) if log is None else log
    with pd.option_context("display.width", 200, "display.max_colwidth", 40, "display.precision", 4):
        print(lb_table(log).to_string(index=False) if len(log)
              else f"{relative(resolve(runs_dir) / LB_LOG)}: no score yet")
    png = resolve(runs_dir) / "lb_log.png"
    plt.close(plot_cv_lb(log, save=png))
    print(f"plot: {relative(png)}")
