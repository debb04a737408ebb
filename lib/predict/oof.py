"""Everything read back from ``runs/``: which runs exist, their recipes, OOF and test predictions.

    comp, runs, oofs = open_runs("data/cars", "runs")          # 03 and 04 start here
    tests = load_test(runs, comp.classes)                      # each model's fold-mean test predictions

A *model* is a run name without its ``_f<fold>`` suffix (``convnext_tiny_f3`` -> ``convnext_tiny``):
the folds of one model are joined into one full out-of-fold prediction and averaged into one test
prediction. A run's recipe is its ``params.yaml`` (``lib.core.config.TrainConfig``).

The fold models' test predictions are averaged in ``FOLD_SPACE``: probabilities (``"logit"``: the
mean of their log-probabilities, then a softmax). 04 records it in blend.json, so 05 averages the
same way. On the Fashion-MNIST demo the mean of probabilities scored the better test log loss at the
same calibration (bench/README.md, "Calibration of the fold mean"); ``lib.predict.calibrate`` fits
the test temperature to either.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from lib.core.paths import resolve
from lib.core.rundir import RunDir, find_runs, load_config
from lib.data.competition import open_competition
from lib.data.folds import fold_settings, warn_unchecked_duplicates
from lib.predict.blend import blend

FOLD_SPACE = "prob"  # how fold models' test predictions are averaged (``lib.predict.blend.SPACES``)


def load_runs(runs_dir, classes: list[str], n_folds: int | None = None,
              models: list[str] | None = None) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Completed runs (``lib.core.rundir.find_runs``, limited to ``models`` when given) and each model's
    full OOF table. Missing folds are named in a warning; incomplete runs are named and skipped; full-data
    refits (``full_data_run``) are left out."""
    every = find_runs(runs_dir, complete_only=False, full_data=False)  # refits: no OOF (lib.predict.refit)
    if models is not None:
        models = [models] if isinstance(models, str) else list(models)
        unknown = sorted(set(models) - set(every["model"]))
        if unknown:
            raise ValueError(f"models {unknown} have no run folder in {resolve(runs_dir)}; "
                             f"models there: {sorted(set(every['model']))}")
        every = every[every["model"].isin(models)]
    partial = every.loc[~every["complete"], "run_name"].tolist()
    if partial:
        warnings.warn(f"skipping {len(partial)} incomplete run(s) (no complete metrics.json): "
                      f"{partial[:10]}", stacklevel=2)
    runs = every[every["complete"]].reset_index(drop=True)
    if runs.empty:
        raise ValueError(f"no completed run in {resolve(runs_dir)}; train some with "
                         "notebooks/02_train.ipynb or `make grid`")
    return runs, load_oof(runs, classes, n_folds)


def open_runs(data_dir, runs_dir="runs", models: list[str] | None = None):
    """The competition (``open_competition``) and its completed runs: ``(comp, runs, oofs)``.

    ``runs`` as ``load_runs`` gives them, each model's folds checked against the competition's
    ``folds.json``. A run trained on another competition is an error that names it. Folds made without
    01_eda's duplicate check of every train image raise ``lib.data.folds.DuplicatesUnchecked`` (a warning)."""
    comp = open_competition(data_dir)
    folds = fold_settings(comp)
    warn_unchecked_duplicates(comp, folds)
    runs, oofs = load_runs(runs_dir, comp.classes, folds["n_folds"] if folds else None, models)
    other = [r.run_name for r in runs.itertuples()
             if resolve(load_config(r.dir).data_dir).resolve() != comp.root]
    if other:
        raise ValueError(f"runs {other[:10]} in {resolve(runs_dir)} were trained on another competition than "
                         f"{comp.root}; pick the others with models=[...] or give each competition its own runs_dir")
    return comp, runs, oofs


def load_oof(runs: pd.DataFrame, classes: list[str], n_folds: int | None = None) -> dict[str, pd.DataFrame]:
    """Full out-of-fold predictions per model: id, fold, target, one column per class.

    Folds missing for a model are named in a warning; its OOF then covers fewer images (compare
    models on the ids they share, as ``common_ids`` gives).
    """
    out = {}
    for model, g in runs.groupby("model", sort=True):
        parts = [pd.read_csv(Path(d) / RunDir.OOF, dtype={"id": str}) for d in g["dir"]]
        df = pd.concat(parts, ignore_index=True)
        _check_columns(df, classes, g["dir"].iloc[0])
        if n_folds is not None:
            missing = sorted(set(range(n_folds)) - set(g["fold"].astype(int)))
            if missing:
                warnings.warn(f"model {model}: folds {missing} have no completed run; its OOF covers "
                              f"{len(df)} images", stacklevel=2)
        if df["id"].duplicated().any():
            raise ValueError(f"model {model}: an id appears in two folds' oof.csv; were the runs made "
                             "with different folds.csv? ({list(g['dir'])})")
        out[model] = df.sort_values("id").reset_index(drop=True)
    return out


def load_test(runs: pd.DataFrame, classes: list[str]) -> dict[str, pd.DataFrame]:
    """Test probabilities per model: the mean over its folds' runs in ``FOLD_SPACE`` (id + one column per class)."""
    out = {}
    for model, g in runs.groupby("model", sort=True):
        out[model] = fold_mean([pd.read_csv(Path(d) / RunDir.TEST, dtype={"id": str}) for d in g["dir"]],
                               g["dir"], classes)
    return out


def fold_mean(parts: list[pd.DataFrame], dirs, classes: list[str], space: str = FOLD_SPACE) -> pd.DataFrame:
    """id + classes: the mean in ``space`` (``FOLD_SPACE``; ``"logit"``: of the log-probabilities, then a
    softmax) of one model's per-fold test predictions, which must list the same ids."""
    dirs = list(dirs)
    for p, d in zip(parts, dirs):
        _check_columns(p, classes, d)
        if not p["id"].equals(parts[0]["id"]):
            raise ValueError(f"{d}/test.csv lists other test ids than {dirs[0]}/test.csv")
    mean = blend([p[classes].to_numpy(np.float64) for p in parts], np.ones(len(parts)), space)
    return pd.concat([parts[0][["id"]], pd.DataFrame(mean, columns=classes)], axis=1)


def common_ids(oofs: dict[str, pd.DataFrame]) -> list[str]:
    """Ids present in every model's OOF, sorted."""
    ids = None
    for df in oofs.values():
        ids = set(df["id"]) if ids is None else ids & set(df["id"])
    return sorted(ids or [])


def _check_columns(df: pd.DataFrame, classes: list[str], where) -> None:
    missing = [c for c in classes if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: prediction columns do not match the competition's classes "
                         f"(missing {missing[:5]}); was it trained on another data_dir?")
