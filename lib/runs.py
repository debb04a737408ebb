"""Read run artifacts back: which runs exist, their OOF and test predictions, the leaderboard.

A *model* is a run name without its ``_f<fold>`` suffix (``convnext_tiny_f3`` -> ``convnext_tiny``):
the folds of one model are blended into one full out-of-fold prediction and one averaged test
prediction.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .io import read_json
from .paths import resolve

FOLD_SUFFIX = re.compile(r"_f\d+$")


def model_name(run_name: str) -> str:
    return FOLD_SUFFIX.sub("", run_name)


def run_complete(run_dir) -> bool:
    """A run is complete once 02_train has written metrics.json with ``"complete": true`` (its last write)."""
    m = Path(run_dir) / "metrics.json"
    return m.exists() and read_json(m).get("complete", False)


def fold_mean(parts: list[pd.DataFrame], dirs, classes: list[str]) -> pd.DataFrame:
    """id + classes: the mean of one model's per-fold test predictions, which must list the same ids."""
    dirs = list(dirs)
    for p, d in zip(parts, dirs):
        _check_columns(p, classes, d)
        if not p["id"].equals(parts[0]["id"]):
            raise ValueError(f"{d}/test.csv lists other test ids than {dirs[0]}/test.csv")
    mean = np.mean([p[classes].to_numpy(np.float64) for p in parts], axis=0)
    return pd.concat([parts[0][["id"]], pd.DataFrame(mean, columns=classes)], axis=1)


def find_runs(runs_dir="runs", complete_only: bool = True) -> pd.DataFrame:
    """One row per run folder: run_name, model, fold, complete, log_loss, accuracy, f1_macro,
    best_epoch, minutes, dir; sorted by model then fold."""
    rows = []
    for d in sorted(resolve(runs_dir).glob("*/")):
        m, p = d / "metrics.json", d / "params.yaml"
        if not p.exists():
            continue
        params = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        metrics = read_json(m) if m.exists() else {}
        rows.append({"run_name": d.name, "model": model_name(d.name), "fold": params.get("fold"),
                     "complete": bool(metrics.get("complete")), **{k: metrics.get(k) for k in
                     ("log_loss", "accuracy", "f1_macro", "best_epoch", "minutes")}, "dir": str(d)})
    df = pd.DataFrame(rows, columns=["run_name", "model", "fold", "complete", "log_loss", "accuracy",
                                     "f1_macro", "best_epoch", "minutes", "dir"])
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
