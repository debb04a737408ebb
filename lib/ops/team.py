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

from lib.core.cli import HelpFormatter, command_parser
from lib.core.paths import relative, resolve


def parser() -> argparse.ArgumentParser:
    ap = command_parser("lib.ops.team", __doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("blend", help="blend submission files (or run folders) into one team submission",
                       formatter_class=HelpFormatter)
    b.add_argument("files", nargs="+", help="submission CSVs (probabilities or labels) or run folders")
    b.add_argument("--data-dir", required=True, help="the competition folder (its sample_submission.csv)")
    b.add_argument("--out", default="runs/team_submission.csv", help="the team submission to write")
    b.add_argument("--oof", nargs="+", help="per file, its OOF CSV in the kit's format or '-'")
    b.add_argument("--weights", nargs="+", help="per file, its weight or '-' (fitted on OOF, else 1)")
    b.add_argument("--names", nargs="+", help="per file, the member's name or '-' (the file's stem)")
    b.add_argument("--metric", default=None,
                   help="the competition's metric (default: the runs' monitor, else log_loss)")
    b.add_argument("--runs-dir", default="runs", help="the runs folder (its runs' monitor, ensemble/)")
    lb = sub.add_parser("lb", help="the public leaderboard log: each submission's CV beside its score")
    lbs = lb.add_subparsers(dest="lb_command", required=True)
    add = lbs.add_parser("add", help="log a submission's public leaderboard score",
                         formatter_class=HelpFormatter)
    add.add_argument("submission", help="the CSV you submitted")
    add.add_argument("score", type=float, help="the public leaderboard score it got")
    add.add_argument("--cv", type=float, default=None, help="its CV (default: the one the kit recorded for this file)")
    add.add_argument("--metric", default=None, help="the metric of --cv and score (default: the recorded one)")
    add.add_argument("--note", default="", help="what this submission was")
    add.add_argument("--replace", action="store_true", help="correct the score of a file logged before")
    add.add_argument("--runs-dir", default="runs", help="the runs folder holding lb_log.csv")
    show = lbs.add_parser("show", help="print the log and draw <runs-dir>/lb_log.png",
                          formatter_class=HelpFormatter)
    show.add_argument("--runs-dir", default="runs", help="the runs folder holding lb_log.csv")
    return ap


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    import pandas as pd

    from lib.ops.team_files import blend_files, show_log
    from lib.predict.lb_log import add_lb_score
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
