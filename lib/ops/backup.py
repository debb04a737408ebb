"""Command line of lib.core.backup: mirror runs/ to a bucket, or bring it back after a lost machine.

    python -m lib.ops.backup sync --runs-dir runs --to s3://team/cars/runs        # make sync
    python -m lib.ops.backup restore --from s3://team/cars/runs --runs-dir runs    # make restore

Exit status 1 when a run could not be pushed (its line on stderr says why), 2 when nothing was done.
The work (``lib.core.backup``) is imported once the arguments are read, so ``--help`` answers at once.
"""
from __future__ import annotations

import argparse
import sys

from lib.core.cli import command_parser


def parser() -> argparse.ArgumentParser:
    ap = command_parser("lib.ops.backup", __doc__)
    sub = ap.add_subparsers(dest="command", required=True, metavar="{sync,restore}")
    s = sub.add_parser("sync", help="mirror runs/ to the URL (changed files only)", formatter_class=ap.formatter_class,
                       description="Mirror runs/ to the URL: changed files only, nothing deleted there.")
    s.add_argument("--runs-dir", default="runs", help="the runs folder to back up")
    s.add_argument("--to", required=True, help="s3://bucket/prefix, gs://bucket/prefix or a mounted folder")
    r = sub.add_parser("restore", help="bring runs back from the URL (then `make grid` resumes them)",
                       formatter_class=ap.formatter_class, description="Bring runs back from the URL where sync "
                       "wrote them; then `make grid` resumes them.")
    r.add_argument("--from", dest="source", required=True, help="the URL sync wrote to")
    r.add_argument("--runs-dir", default="runs", help="the runs folder to fill")
    return ap


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    import pandas as pd

    from lib.core.backup import restore_runs, sync_runs
    from lib.core.paths import redact_text
    try:
        table = sync_runs(a.runs_dir, a.to) if a.command == "sync" else restore_runs(a.source, a.runs_dir)
    except (ValueError, FileNotFoundError, PermissionError) as e:
        print(redact_text(f"backup {a.command}: {e}"), file=sys.stderr)
        return 2
    problems = [] if a.command != "sync" else [(w, p) for w, p in zip(table["what"], table["problem"]) if p]
    table = table.drop(columns="problem", errors="ignore")
    with pd.option_context("display.width", 160, "display.max_rows", 500):
        print(table.astype(object).where(table.notna(), "").to_string(index=False))
    for what, problem in problems:
        print(f"backup sync: {what} NOT backed up: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
