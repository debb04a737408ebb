"""An offline bundle for code competitions: everything 05_inference needs, in one folder to upload
as a dataset.

    python -m lib.ops.bundle --runs runs --out bundle          # or: make bundle RUNS=runs OUT=bundle

What it holds and how it is built: ``lib.ops.offline``. The work is imported once the arguments are
read, so ``--help`` answers at once.
"""
from __future__ import annotations

import argparse

from lib.core.cli import command_parser
from lib.core.paths import relative


def parser() -> argparse.ArgumentParser:
    ap = command_parser("lib.ops.bundle", __doc__)
    ap.add_argument("--runs", default="runs", help="the runs folder with 04's ensemble/blend.json")
    ap.add_argument("--out", default="bundle", help="the bundle's folder (written whole, or not at all)")
    ap.add_argument("--force", action="store_true", help="replace an existing bundle (never another folder)")
    return ap


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    from lib.ops.offline import make_bundle
    out = make_bundle(a.runs, a.out, a.force)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    print(f"bundle: {relative(out)} ({size:.1f} MiB); upload it as a dataset and run its 05_inference.ipynb")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
