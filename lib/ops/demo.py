"""Build the embedded demo competition from real data that needs no download.

    python -m lib.ops.demo                       # fashion-mnist if Debian's files are there, else digits
    python -m lib.ops.demo --source digits --max-train-per-class 60 --max-test 200

It writes ``<out>/<name>/`` in exactly the shape competitions ship, and its held-back solution.csv
(``lib.ops.demo_data``); a folder built with the same arguments is reused. The work is imported once
the arguments are read, so ``--help`` answers at once.
"""
from __future__ import annotations

import argparse

from lib.core.cli import command_parser


def parser() -> argparse.ArgumentParser:
    ap = command_parser("lib.ops.demo", __doc__)
    ap.add_argument("--source", default="auto", help="auto | fashion-mnist | digits | a folder of idx .gz files "
                    "(auto: fashion-mnist when Debian's dataset-fashion-mnist is installed, else digits)")
    ap.add_argument("--out", default="data", help="parent folder of the competition")
    ap.add_argument("--name", default=None, help="competition folder name (None: fmnist or digits)")
    ap.add_argument("--max-train-per-class", type=int, default=None, help="train images per class (None: all)")
    ap.add_argument("--max-test", type=int, default=None, help="test images (None: all)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the subsample and of the images' random sizes")
    return ap


def main(argv=None) -> None:
    a = parser().parse_args(argv)
    from lib.ops.demo_data import build_demo
    print(build_demo(a.source, a.out, a.name, a.max_train_per_class, a.max_test, a.seed))


if __name__ == "__main__":
    main()
