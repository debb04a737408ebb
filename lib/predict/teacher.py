"""Soft targets from a teacher: distillation on the training images and pseudo-labels on the test
images, under the fold rule that keeps every fold's validation score honest.

    teacher_table(["runs/resnet_f0", "runs/resnet_f1", "runs/resnet_f2"], "train", "runs/teacher_train.csv")
    teacher_table(["runs/resnet_f0", "runs/resnet_f1", "runs/resnet_f2"], "test", "runs/teacher_test.csv")
    python -m lib.ops.teacher --runs runs/resnet_f* --out runs            # the same two tables
    # recipe: teacher: runs/teacher_train.csv, teacher_weight: 0.5, pseudo_labels: runs/teacher_test.csv

A teacher table is a CSV: ``id``, one probability column per class (rows sum to 1) and ``held_out``:
the fold whose images the model that predicted the row never trained on (a model that held out
several folds is listed once per fold). The kit's ``oof.csv`` is one: its ``fold`` is the fold its
model held out. A table with neither column (04's ``oof_blend.csv``, a submission, a fold mean) does
not say which models made its rows. ``teacher_table`` also writes ``folds_sha1``: the hash of the
folds.csv its runs trained on (``lib.data.folds.folds_hash``). "held_out k" means fold k of that
folds.csv only: after a re-split a student refuses the table (``lib.data.soft_targets.check_split``)
until the teacher's runs are retrained and the table rebuilt.

**The fold rule** (enforced when a run's datasets are built, ``add_teacher``): student fold k is
scored on fold k's images, so nothing it learns from may come from a model that trained on them. A
teacher row is usable by student k only when ``held_out == k``; every training image (distillation)
and every test image (pseudo-labels) needs such a row, or the run is refused. Hence:

* A K-fold OOF (a run's oof.csv, a model's folds joined, 04's ``oof_blend.csv``) is never usable for
  distillation: row i was predicted by the model of fold(i), trained on every other fold, so for any
  student k != fold(i) it saw k's validation images; and student k does not train on fold k's rows.
* Usable: teacher fold k's own predictions of its training images (``teacher_table(..., "train")``
  re-predicts them: in-sample, softer with ``teacher_temperature``), or nested teachers.
* Pseudo-labels: test images are in no fold, but a test prediction averaged over the K fold models
  (the fold mean, 04's submission) carries what the fold-k model learnt from fold k's labels into
  student k and inflates its score. Strict rule: student k takes teacher fold k's own test
  predictions (``teacher_table(..., "test")``).
* A full-data run (``full_data``, ``lib.predict.refit``) has no validation fold: any rows serve, averaged per image.

Targets: image i trains on ``(1 - teacher_weight) * one_hot(y_i) + teacher_weight * q_i``, q_i the
teacher row softened by ``teacher_temperature`` T (``p ** (1 / T)`` renormalised: the softmax of the
teacher's log-probabilities at T; the student stays at T = 1). Every loss of ``lib.model.losses`` is linear
in the target row, so this equals mixing the hard-label and teacher losses; MixUp/CutMix mix the two
images' losses (``y_int``), i.e. their soft targets. Pseudo-labels: with ``pseudo_threshold`` t the
test images whose teacher max probability is >= t join with the argmax as a hard label; with None
every test image joins with its softened row. Validation stays on hard labels.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from lib.core.io import write_csv
from lib.core.paths import resolve
from lib.core.rundir import RunDir, load_config, run_complete
from lib.data.competition import open_competition
from lib.data.folds import check_same_split, folds_hash, make_folds
from lib.data.soft_targets import FOLDS_SHA1, HELD_OUT
from lib.predict.inference import PredictSpec, predict_fold, predict_images


def teacher_table(run_dirs, split: str, out=None, spec: PredictSpec | None = None) -> pd.DataFrame:
    """A fold-safe teacher table from fold runs (one model's, or several models'): id, held_out, classes
    (probabilities, rows summing to 1), folds_sha1 (the hash of the folds.csv the runs trained on).

    Runs predict as ``spec`` says (``lib.predict.inference.PredictSpec``: TTA ops, space, batch size,
    device, workers, progress; None: plain). split "train": each run of fold k re-predicts its training
    images (every image outside fold k), held_out k: the rows student fold k may distil from. split
    "test": each run's test predictions (its test.csv, re-predicted when ``spec`` has TTA ops), held_out k.
    Every run must be a complete fold run validated on exactly fold k of the competition's folds.csv
    now (else its held_out would name another split). Written to ``out`` (CSV, atomically) when given."""

    if split not in ("train", "test"):
        raise ValueError(f"split {split!r}: train (distillation) or test (pseudo-labels)")
    spec = spec or PredictSpec()
    parts = []
    for d in map(resolve, run_dirs):
        cfg = load_config(d)
        if not run_complete(d) or cfg.full_data:
            raise ValueError(f"{d}: not a complete fold run (a full-data run held out no fold)")
        comp = open_competition(cfg.data_dir, cfg.scan_args, cfg.group_col, verbose=False)
        folds = make_folds(comp, n_folds=cfg.n_folds, seed=42, group_col=cfg.group_col, verbose=False)
        check_same_split(d, cfg.fold, folds, f"teacher run {d} (fold {cfg.fold}; folds now: {comp.work / 'folds.csv'})")
        if split == "train":
            rows = folds[folds["fold"] != cfg.fold].reset_index(drop=True)
            probs = predict_images(d, comp, "train", rows, spec)
            part = pd.concat([rows[["id"]], pd.DataFrame(probs, columns=comp.classes)], axis=1)
        elif spec.plain:
            part = pd.read_csv(d / RunDir.TEST, dtype={"id": str})
        else:
            part = predict_fold(d, spec, "test")
        part.insert(1, HELD_OUT, cfg.fold)
        part[FOLDS_SHA1] = folds_hash(folds)
        parts.append(part)
    table = pd.concat(parts, ignore_index=True)
    if out is not None:
        write_csv(Path(resolve(out)), table)
    return table
