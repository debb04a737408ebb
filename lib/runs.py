"""Everything read back from ``runs/``: which runs exist, their recipes, OOF and test predictions.

    comp, runs, oofs = open_runs("data/cars", "runs")          # 03 and 04 start here
    tests = load_test(runs, comp.classes)                      # each model's fold-mean test predictions

A *model* is a run name without its ``_f<fold>`` suffix (``convnext_tiny_f3`` -> ``convnext_tiny``):
the folds of one model are joined into one full out-of-fold prediction and averaged into one test
prediction. A run's recipe is its ``params.yaml`` (``lib.config.TrainConfig``).
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .config import TrainConfig, legacy_settings
from .data import open_competition
from .folds import fold_settings
from .io import read_json
from .paths import resolve

FOLD_SUFFIX = re.compile(r"_f\d+$")


def model_name(run_name: str) -> str:
    return FOLD_SUFFIX.sub("", run_name)

def run_complete(run_dir) -> bool:
    """A run is complete once 02_train has written metrics.json with ``"complete": true`` (its last write)."""
    m = Path(run_dir) / "metrics.json"
    return m.exists() and read_json(m).get("complete", False)


def full_data_run(run_dir) -> bool:
    """A full-data refit (``full_data`` in its params.yaml, ``lib.refit``): it has no OOF."""
    p = Path(run_dir) / "params.yaml"
    return p.exists() and bool((yaml.safe_load(p.read_text(encoding="utf-8")) or {}).get("full_data"))


def recorded_config(run_dir) -> dict | None:
    """The recipe a run recorded in its params.yaml (None when there is none), with the settings
    added since it was written set to what it did (``lib.config.legacy_settings``)."""
    p = Path(run_dir) / "params.yaml"
    if not p.exists():
        return None
    values = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    return {**legacy_settings(values), **values}


def load_config(run_dir) -> TrainConfig:
    """A run's recipe (its params.yaml) as a ``TrainConfig``; an older run's missing settings are
    what it did (``lib.config.legacy_settings``: e.g. a doc_noise run of then trained with every flip)."""
    p = Path(run_dir) / "params.yaml"
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file; {run_dir} is not a run folder of 02_train")
    return TrainConfig.from_yaml(p, **legacy_settings(yaml.safe_load(p.read_text(encoding="utf-8")) or {}))


RUN_COLUMNS = ["run_name", "model", "fold", "complete", "log_loss", "accuracy", "f1_macro", "monitor",
               "monitor_best", "monitor_last", "weights_epoch", "best_epoch", "last_epoch", "minutes",
               "min_per_epoch", "precision", "dir"]


def find_runs(runs_dir="runs", complete_only: bool = True, full_data: bool = True) -> pd.DataFrame:
    """One row per run folder, sorted by model then fold: run_name, model, fold, complete, the OOF
    log_loss, accuracy, f1_macro; monitor (the metric that picks the best epoch) and its validation
    score at the best epoch (monitor_best) and at the last (monitor_last); weights_epoch (the epoch whose
    weights made oof.csv), best_epoch, last_epoch (0-based), minutes, min_per_epoch (the mean epoch's
    training minutes: a slow machine shows at once), precision (what it computed in, env.json), dir.
    What an older metrics.json
    did not record is NaN. ``full_data=False`` leaves out full-data refits (``lib.refit``: no OOF, no fold)."""
    rows = []
    for d in sorted(resolve(runs_dir).glob("*/")):
        m, p = d / "metrics.json", d / "params.yaml"
        if not p.exists():
            continue
        params = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        if params.get("full_data") and not full_data:
            continue
        metrics = read_json(m) if m.exists() else {}
        mon = metrics.get("monitor")
        secs = [e["seconds"] for e in metrics.get("epochs", []) if e.get("seconds") is not None]
        env = read_json(d / "env.json") if (d / "env.json").exists() else {}
        rows.append({"run_name": d.name, "model": model_name(d.name), "fold": params.get("fold"),
                     "complete": bool(metrics.get("complete")),
                     **{k: metrics.get(k) for k in ("log_loss", "accuracy", "f1_macro", "monitor", "weights_epoch",
                                                    "best_epoch", "last_epoch", "minutes")},
                     "monitor_best": (metrics.get("valid_best") or {}).get(mon),
                     "monitor_last": (metrics.get("valid_last") or {}).get(mon),
                     "min_per_epoch": sum(secs) / len(secs) / 60 if secs else None,
                     "precision": env.get("precision"), "dir": str(d)})
    df = pd.DataFrame(rows, columns=RUN_COLUMNS)
    for c in ("monitor_best", "monitor_last", "weights_epoch", "last_epoch", "min_per_epoch"):
        df[c] = pd.to_numeric(df[c]).astype(float)  # None (not recorded) -> NaN
    if complete_only:
        df = df[df["complete"]]
    return df.sort_values(["model", "fold"]).reset_index(drop=True)


def run_params(runs: pd.DataFrame, differing_only: bool = True) -> pd.DataFrame:
    """The parameters of each run (index run_name); with ``differing_only``, only those that differ."""
    rows = {r.run_name: yaml.safe_load((Path(r.dir) / "params.yaml").read_text(encoding="utf-8"))
            for r in runs.itertuples()}
    df = pd.DataFrame.from_dict(rows, orient="index").drop(columns=["run_name"], errors="ignore")
    if differing_only and len(df) > 1:
        df = df.loc[:, [c for c in df.columns if df[c].astype(str).nunique() > 1]]
    return df


def load_runs(runs_dir, classes: list[str], n_folds: int | None = None,
              models: list[str] | None = None) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Completed runs (``lib.runs.find_runs``, limited to ``models`` when given) and each model's
    full OOF table. Missing folds are named in a warning; incomplete runs are named and skipped; full-data
    refits (``full_data_run``) are left out."""
    every = find_runs(runs_dir, complete_only=False, full_data=False)  # refits have no OOF: 04 adds them (lib.refit)
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
    ``folds.json``. A run trained on another competition is an error that names it."""
    comp = open_competition(data_dir)
    folds = fold_settings(comp)
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
        parts = [pd.read_csv(Path(d) / "oof.csv", dtype={"id": str}) for d in g["dir"]]
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
    """Test probabilities per model: the mean over its folds' runs (id + one column per class)."""
    out = {}
    for model, g in runs.groupby("model", sort=True):
        out[model] = fold_mean([pd.read_csv(Path(d) / "test.csv", dtype={"id": str}) for d in g["dir"]],
                               g["dir"], classes)
    return out


def fold_mean(parts: list[pd.DataFrame], dirs, classes: list[str]) -> pd.DataFrame:
    """id + classes: the mean of one model's per-fold test predictions, which must list the same ids."""
    dirs = list(dirs)
    for p, d in zip(parts, dirs):
        _check_columns(p, classes, d)
        if not p["id"].equals(parts[0]["id"]):
            raise ValueError(f"{d}/test.csv lists other test ids than {dirs[0]}/test.csv")
    mean = np.mean([p[classes].to_numpy(np.float64) for p in parts], axis=0)
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
