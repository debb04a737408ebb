"""Team work from the command line: blend teammates' submission files into one, and log each
submission's public leaderboard score beside its CV to watch the gap.

    python -m lib.ops.team blend kim.csv lee.csv shared/park_run --data-dir data/docs \\
        --out runs/team_submission.csv [--oof kim_oof.csv - -] [--weights - 2 -] [--metric f1_macro]
    python -m lib.ops.team lb add runs/submission.csv 0.133 [--note "convnext + effnet"]
    python -m lib.ops.team lb add shared/kim.csv 0.141 --cv 0.07 --metric log_loss
    python -m lib.ops.team lb show

``blend`` is 04's team blend (``lib.predict.team``) of these files alone (no local runs): each file a
probability or label submission, or a run folder (its test.csv, and its oof.csv); ``--oof``,
``--weights`` and ``--names`` give one value per file in order, "-" for none. It writes the team's
submission, ``<runs-dir>/ensemble/team_members.csv`` and ``team_agreement.csv`` and, when every
member's weight was fitted on OOF (the CV of the blend is then known), ``team_expected_score.json``.
``lb add`` appends to ``<runs-dir>/lb_log.csv`` (``lib.predict.lb_log``: the CV found by the file's
sha1 for 04's and this blend's submissions, else ``--cv``), prints the log and draws
``<runs-dir>/lb_log.png``; ``lb show`` prints and draws it. Exit status 2 when nothing was done.
"""
from __future__ import annotations

import argparse
import sys

import matplotlib.pyplot as plt
import pandas as pd

from lib.core.io import write_json
from lib.core.paths import relative, resolve
from lib.core.rundir import find_runs
from lib.data.competition import open_competition
from lib.insight.lb_plot import plot_cv_lb
from lib.predict.calibrate import expected_score
from lib.predict.crossfit import competition_metric
from lib.predict.lb_log import LB_LOG, add_lb_score, expected_record, lb_table, read_lb_log
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lib.ops.team", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("blend", help="blend submission files (or run folders) into one team submission",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    b.add_argument("files", nargs="+", help="submission CSVs (probabilities or labels) or run folders")
    b.add_argument("--data-dir", required=True, help="the competition folder (its sample_submission.csv)")
    b.add_argument("--out", default="runs/team_submission.csv", help="the team submission to write")
    b.add_argument("--oof", nargs="+", help="per file, its OOF CSV in the kit's format or '-'")
    b.add_argument("--weights", nargs="+", help="per file, its weight or '-' (fitted on OOF, else 1)")
    b.add_argument("--names", nargs="+", help="per file, the member's name or '-' (the file's stem)")
    b.add_argument("--metric", default=None,
                   help="the competition's metric (default: the runs' monitor, else log_loss)")
    b.add_argument("--runs-dir", default="runs")
    lb = sub.add_parser("lb", help="the public leaderboard log: each submission's CV beside its score")
    lbs = lb.add_subparsers(dest="lb_command", required=True)
    add = lbs.add_parser("add", help="log a submission's public leaderboard score",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add.add_argument("submission", help="the CSV you submitted")
    add.add_argument("score", type=float, help="the public leaderboard score it got")
    add.add_argument("--cv", type=float, default=None, help="its CV (default: the one the kit recorded for this file)")
    add.add_argument("--metric", default=None, help="the metric of --cv and score (default: the recorded one)")
    add.add_argument("--note", default="", help="what this submission was")
    add.add_argument("--replace", action="store_true", help="correct the score of a file logged before")
    add.add_argument("--runs-dir", default="runs")
    show = lbs.add_parser("show", help="print the log and draw <runs-dir>/lb_log.png",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    show.add_argument("--runs-dir", default="runs")
    a = ap.parse_args(argv)
    try:
        if a.command == "blend":
            team, expected = blend_files(a.files, a.data_dir, a.out, a.runs_dir, a.oof, a.weights, a.names, a.metric)
            with pd.option_context("display.width", 200, "display.precision", 4):
                print(team.members.to_string(index=False))
            print(f"wrote {relative(resolve(a.out))}; the vote changed {team.overruled} rows of the blend")
            print(f"CV: {expected['metric']} {expected['expected']:.4f} ({expected['basis']})" if expected else
                  "CV: unknown (a member's weight was not fitted on OOF): `lb add` will need --cv")
        elif a.lb_command == "add":
            show_log(a.runs_dir, add_lb_score(a.submission, a.score, a.runs_dir, a.cv, a.metric, a.note, a.replace))
        else:
            show_log(a.runs_dir)
    except (ValueError, FileNotFoundError) as e:
        print(f"team {a.command}: nothing was done.\n{e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
