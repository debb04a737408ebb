"""Write the fold-safe teacher tables of a model's fold runs: teacher_train.csv and teacher_test.csv.

    python -m lib.ops.teacher --runs runs/resnet_f* --out runs
    # then in a recipe: teacher: runs/teacher_train.csv, pseudo_labels: runs/teacher_test.csv

Each fold run predicts its own training images (distillation) and the test images (pseudo-labels),
rows tagged with the fold it held out: the fold rule of ``lib.predict.teacher``. The work is imported
once the arguments are read, so ``--help`` answers at once.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from lib.core.cli import command_parser


def parser() -> argparse.ArgumentParser:
    ap = command_parser("lib.ops.teacher", __doc__)
    ap.add_argument("--runs", nargs="+", required=True, help="the teacher's fold runs, e.g. runs/resnet_f*")
    ap.add_argument("--out", required=True, help="folder for teacher_train.csv (a recipe's teacher) and "
                    "teacher_test.csv (its pseudo_labels)")
    ap.add_argument("--tta", nargs="+", default=["identity"], help="TTA ops of the teacher's predictions "
                    "(lib.model.tta)")
    return ap


def main(argv=None) -> None:
    a = parser().parse_args(argv)
    from lib.data.soft_targets import HELD_OUT
    from lib.predict.inference import PredictSpec
    from lib.predict.teacher import teacher_table
    spec = PredictSpec(a.tta)
    for split in ("train", "test"):
        path = Path(a.out) / f"teacher_{split}.csv"
        table = teacher_table(a.runs, split, path, spec)
        print(f"{path}: {len(table)} rows, held_out folds {sorted(table[HELD_OUT].unique().tolist())}")


if __name__ == "__main__":
    main()
