"""Soft targets from a teacher: distillation on the training images and pseudo-labels on the test
images, under the fold rule that keeps every fold's validation score honest.

    teacher_table(["runs/resnet_f0", "runs/resnet_f1", "runs/resnet_f2"], "train", "runs/teacher_train.csv")
    teacher_table(["runs/resnet_f0", "runs/resnet_f1", "runs/resnet_f2"], "test", "runs/teacher_test.csv")
    python -m lib.teacher --runs runs/resnet_f* --out runs        # the same two tables
    # recipe: teacher: runs/teacher_train.csv, teacher_weight: 0.5, pseudo_labels: runs/teacher_test.csv

A teacher table is a CSV: ``id``, one probability column per class (rows sum to 1) and ``held_out``:
the fold whose images the model that predicted the row never trained on (a model that held out
several folds is listed once per fold). The kit's ``oof.csv`` is one: its ``fold`` is the fold its
model held out. A table with neither column (04's ``oof_blend.csv``, a submission, a fold mean) does
not say which models made its rows.

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
* A full-data run (``full_data``, ``lib.refit``) has no validation fold: any rows serve, averaged per image.

Targets: image i trains on ``(1 - teacher_weight) * one_hot(y_i) + teacher_weight * q_i``, q_i the
teacher row softened by ``teacher_temperature`` T (``p ** (1 / T)`` renormalised: the softmax of the
teacher's log-probabilities at T; the student stays at T = 1). Every loss of ``lib.losses`` is linear
in the target row, so this equals mixing the hard-label and teacher losses; MixUp/CutMix mix the two
images' losses (``y_int``), i.e. their soft targets. Pseudo-labels: with ``pseudo_threshold`` t the
test images whose teacher max probability is >= t join with the argmax as a hard label; with None
every test image joins with its softened row. Validation stays on hard labels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .io import write_csv
from .paths import resolve

HELD_OUT = "held_out"


def settings_problems(cfg) -> list[str]:
    """The recipe's teacher settings that lib would refuse (``TrainConfig.problems`` calls this)."""
    out = []
    if not 0 <= cfg.teacher_weight <= 1:
        out.append(f"teacher_weight {cfg.teacher_weight}: the teacher's share of each training target, in [0, 1]")
    elif cfg.teacher and cfg.teacher_weight == 0:
        out.append(f"teacher {cfg.teacher!r} with teacher_weight 0 is never used: give a weight in (0, 1] or "
                   "set teacher None")
    if not cfg.teacher_temperature > 0:
        out.append(f"teacher_temperature {cfg.teacher_temperature}: > 0 (1 = the teacher's probabilities as they are)")
    if cfg.pseudo_threshold is not None and not cfg.pseudo_labels:
        out.append(f"pseudo_threshold {cfg.pseudo_threshold} without pseudo_labels: name the test-image teacher "
                   "table, or set pseudo_threshold None")
    elif cfg.pseudo_threshold is not None and not 0 < cfg.pseudo_threshold <= 1:
        out.append(f"pseudo_threshold {cfg.pseudo_threshold}: a probability in (0, 1], e.g. 0.9, or None (all, soft)")
    return out


def missing_tables(cfg) -> list[str]:
    """The teacher tables the recipe names that are not there (``TrainConfig.missing_files``)."""
    return [f"{name} {path!r}: no such teacher table (CSV: id, one column per class, held_out; "
            "lib.teacher.teacher_table writes one)"
            for name, path in (("teacher", cfg.teacher), ("pseudo_labels", cfg.pseudo_labels))
            if path and not resolve(path).is_file()]


def read_table(path, classes: list[str]) -> pd.DataFrame:
    """A teacher table as id, held_out (float; NaN where the table does not say) and one column per
    class (float64, rows renormalised to sum 1). ``held_out`` is read from ``held_out`` or ``fold``."""
    df = pd.read_csv(resolve(path), dtype={"id": str})
    missing = [c for c in ["id", *classes] if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: a teacher table needs id and one probability column per class; it lacks "
                         f"{missing[:5]} (was it made for another competition?)")
    p = df[classes].to_numpy(np.float64)
    if not np.isfinite(p).all() or (p < 0).any() or np.abs(p.sum(axis=1) - 1).max() > 1e-3:
        raise ValueError(f"{path}: teacher rows must be class probabilities (finite, >= 0, each row summing to 1)")
    col = HELD_OUT if HELD_OUT in df.columns else "fold" if "fold" in df.columns else None
    held = pd.to_numeric(df[col], errors="coerce") if col else pd.Series(np.nan, index=df.index)
    return pd.concat([pd.DataFrame({"id": df["id"], HELD_OUT: held.astype(float)}),
                      pd.DataFrame(p / p.sum(axis=1, keepdims=True), columns=classes)], axis=1)


def safe_rows(table: pd.DataFrame, ids, classes: list[str], fold: int | None, what: str, path) -> np.ndarray:
    """float64 [len(ids), C]: per id, the mean of the teacher rows student ``fold`` may use (those with
    ``held_out == fold``; every row when ``fold`` is None, a full-data run). Raises, naming the fold
    rule, when an id has no such row."""
    ids = pd.Index(ids)
    known = table[table["id"].isin(ids)]
    usable = known if fold is None else known[known[HELD_OUT] == fold]
    mean = usable.groupby("id")[classes].mean()
    lacking = ids.difference(mean.index)
    if len(lacking) == 0:
        return mean.loc[ids].to_numpy(np.float64)
    seen = known[known["id"].isin(lacking)]
    if seen.empty:
        raise ValueError(f"{path}: no teacher row for {len(lacking)} of the {len(ids)} {what} (e.g. "
                         f"{lacking[0]!r}); the table must cover every image the student learns from")
    held = sorted({"unknown" if np.isnan(h) else int(h) for h in seen[HELD_OUT]}, key=str)
    raise ValueError(
        f"{path}: refused by the fold rule: {len(lacking)} of the {len(ids)} {what} of the fold {fold} run have "
        f"teacher rows only from models that held out fold(s) {held}, not fold {fold}: those models trained on "
        f"fold {fold}'s validation images (or the table does not say), so their predictions would leak into its "
        f"score. A K-fold OOF, 04's oof_blend.csv or a fold-mean test prediction never qualifies; use "
        f"lib.teacher.teacher_table of the teacher's fold runs (student fold k learns from teacher fold k only)")


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Rows of probabilities [N, C] at ``temperature``: ``p ** (1 / T)`` renormalised (T > 1 softer)."""
    if temperature == 1:
        return probs
    q = np.power(np.clip(probs, 0.0, 1.0), 1.0 / temperature)
    return q / q.sum(axis=1, keepdims=True)


def select_pseudo(probs: np.ndarray, threshold: float | None, temperature: float = 1.0) -> tuple[np.ndarray, ...]:
    """(keep bool [M], targets float64 [K, C]) of M teacher rows: with ``threshold`` the rows whose max
    probability is >= it, as one-hot rows of their argmax; with None every row, softened."""
    if threshold is None:
        return np.ones(len(probs), bool), soften(probs, temperature)
    keep = probs.max(axis=1) >= threshold
    return keep, np.eye(probs.shape[1])[probs[keep].argmax(axis=1)]


def add_teacher(cfg, comp, train_rows: pd.DataFrame, train, test_images):
    """The training set of the recipe's teacher: ``train`` (the ImageDataset of ``train_rows``) with
    distillation targets (``teacher``), joined by the pseudo-labelled test images (``pseudo_labels``;
    ``test_images(rows)`` builds the augmented ImageDataset of rows of ``comp.test``). ``train``
    unchanged when the recipe has neither. Refuses rows the fold rule forbids (module docstring)."""
    if not (cfg.teacher or cfg.pseudo_labels):
        return train
    fold = None if cfg.full_data else cfg.fold
    hard = np.eye(comp.num_classes)[train_rows["target"].to_numpy()]
    soft = None
    if cfg.teacher:
        rows = safe_rows(read_table(cfg.teacher, comp.classes), train_rows["id"], comp.classes, fold,
                         "training images", cfg.teacher)
        soft = (1 - cfg.teacher_weight) * hard + cfg.teacher_weight * soften(rows, cfg.teacher_temperature)
    if not cfg.pseudo_labels:
        return _labelled(train, train.targets, soft)
    table = read_table(cfg.pseudo_labels, comp.classes)
    unknown = sorted(set(table["id"]) - set(comp.test["id"]))
    if unknown:
        raise ValueError(f"{cfg.pseudo_labels}: {len(unknown)} ids are not test images of {comp.root} "
                         f"(e.g. {unknown[0]!r}); pseudo_labels is a table of test-image predictions")
    probs = safe_rows(table, comp.test["id"], comp.classes, fold, "test images", cfg.pseudo_labels)
    keep, targets = select_pseudo(probs, cfg.pseudo_threshold, cfg.teacher_temperature)
    if not keep.any():
        raise ValueError(f"pseudo_threshold {cfg.pseudo_threshold} keeps no test image (the teacher's highest "
                         f"probability is {probs.max():.3f}); lower it or set it None")
    if cfg.verbose:
        print(f"pseudo-labels: {int(keep.sum())} of {len(keep)} test images join the training set "
              f"({'hard' if cfg.pseudo_threshold is not None else 'soft'} targets)")
    extra = test_images(comp.test[keep].reset_index(drop=True))
    any_soft = soft is not None or cfg.pseudo_threshold is None
    train = _labelled(train, train.targets, (hard if soft is None else soft) if any_soft else None)
    return Joined(train, _labelled(extra, targets.argmax(axis=1), targets if any_soft else None))


def _labelled(ds, targets, soft):
    """``ds`` (an ImageDataset) with hard ``targets`` [N] and ``soft`` rows [N, C] or None."""
    targets = np.asarray(targets, np.int64)
    if len(targets) != len(ds) or (soft is not None and np.shape(soft)[0] != len(ds)):
        raise ValueError(f"{len(ds)} images but {len(targets)} targets")
    ds.targets, ds.soft = targets, None if soft is None else np.asarray(soft, np.float32)
    return ds


class Joined(torch.utils.data.Dataset):
    """Two ImageDatasets as one: the training images, then the pseudo-labelled test images. ``targets``
    (and ``soft``) are theirs concatenated; setting ``epoch`` (``ReseedEachEpoch``) sets both."""

    def __init__(self, first, second):
        self.parts = (first, second)
        self.targets = np.concatenate([first.targets, second.targets])
        self.soft = None if first.soft is None else np.concatenate([first.soft, second.soft])

    @property
    def epoch(self) -> int:
        return self.parts[0].epoch

    @epoch.setter
    def epoch(self, value: int):
        for p in self.parts:
            p.epoch = value

    def __len__(self) -> int:
        return len(self.parts[0]) + len(self.parts[1])

    def __getitem__(self, i: int):
        n = len(self.parts[0])
        return self.parts[0][i] if i < n else self.parts[1][i - n]


def teacher_table(run_dirs, split: str, out=None, ops=("identity",), progress: bool = False) -> pd.DataFrame:
    """A fold-safe teacher table from fold runs (one model's, or several models'): id, held_out, classes.

    split "train": each run of fold k re-predicts its training images (every image outside fold k),
    held_out k: the rows student fold k may distil from. split "test": each run's test predictions
    (its test.csv, re-predicted with the TTA ``ops`` when not identity), held_out k. Every run must be
    a complete fold run validated on exactly fold k of the competition's folds.csv now (else its
    held_out would name another split). Written to ``out`` (CSV, atomically) when given."""
    from .data import open_competition
    from .folds import make_folds
    from .inference import predict_fold, predict_images
    from .runs import load_config, run_complete
    from .warmstart import check_same_split

    if split not in ("train", "test"):
        raise ValueError(f"split {split!r}: train (distillation) or test (pseudo-labels)")
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
            probs = predict_images(d, comp, "train", rows, ops, progress=progress)
            part = pd.concat([rows[["id"]], pd.DataFrame(probs, columns=comp.classes)], axis=1)
        elif list(ops) == ["identity"]:
            part = pd.read_csv(d / "test.csv", dtype={"id": str})
        else:
            part = predict_fold(d, ops, "test", progress=progress)
        part.insert(1, HELD_OUT, cfg.fold)
        parts.append(part)
    table = pd.concat(parts, ignore_index=True)
    if out is not None:
        write_csv(Path(resolve(out)), table)
    return table


def main(argv=None) -> None:
    import argparse
    ap = argparse.ArgumentParser(description="Write the fold-safe teacher tables of a model's fold runs.")
    ap.add_argument("--runs", nargs="+", required=True, help="the teacher's fold runs, e.g. runs/resnet_f*")
    ap.add_argument("--out", required=True, help="folder for teacher_train.csv (teacher) and teacher_test.csv "
                    "(pseudo_labels)")
    ap.add_argument("--tta", nargs="+", default=["identity"], help="TTA ops of the teacher's predictions")
    a = ap.parse_args(argv)
    for split in ("train", "test"):
        path = Path(a.out) / f"teacher_{split}.csv"
        table = teacher_table(a.runs, split, path, a.tta)
        print(f"{path}: {len(table)} rows, held_out folds {sorted(table[HELD_OUT].unique().tolist())}")


if __name__ == "__main__":
    main()
