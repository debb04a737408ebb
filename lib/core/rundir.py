"""A run folder and what it holds, read back: its recipe, whether it is complete, every run of a folder.

    rd = RunDir("runs/convnext_tiny_f0")     # rd.params, rd.metrics, rd.weights, rd.state, rd.oof, rd.test
    find_runs("runs")                         # one row per run folder: scores, epochs, minutes, precision

``RunDir`` owns every file name of a run folder; nothing else spells them. A *model* is a run name
without its ``_f<fold>`` suffix (``convnext_tiny_f3`` -> ``convnext_tiny``). A run is complete once
``metrics.json`` says so (its last write); its recipe is ``params.yaml`` (``lib.core.config``).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from lib.core.config import TrainConfig, legacy_settings
from lib.core.io import read_json
from lib.core.paths import resolve

FOLD_SUFFIX = re.compile(r"_f\d+$")


class RunDir:
    """The files of a run folder ``runs/<run>/`` by role: the one place their names are spelled.

    params.yaml (the recipe), metrics.json (scores and per-epoch history; ``"complete": true`` is its
    last write), model.safetensors (the kept weights), state.pt (resumable training state), oof.csv
    and test.csv (probabilities), env.json (versions, device, precision), curves.png, classes.json
    (the class table re-prediction needs without the data), data.json (the folds and tables it trains on,
    by hash: ``data_changes``), backup.json (this machine's last push of the run to each backup URL,
    ``lib.core.backup``: never mirrored itself). ``RunDir(d).metrics`` is ``d / METRICS``.
    """
    PARAMS, METRICS, WEIGHTS, STATE = "params.yaml", "metrics.json", "model.safetensors", "state.pt"
    OOF, TEST, ENV, CURVES, CLASSES = "oof.csv", "test.csv", "env.json", "curves.png", "classes.json"
    BACKUP, DATA = "backup.json", "data.json"
    PREDICT = (PARAMS, WEIGHTS)  # what re-predicting a run needs (05, a bundle)

    def __init__(self, path):
        self.path = Path(path)

    params = property(lambda self: self.path / self.PARAMS)
    metrics = property(lambda self: self.path / self.METRICS)
    weights = property(lambda self: self.path / self.WEIGHTS)
    state = property(lambda self: self.path / self.STATE)
    oof = property(lambda self: self.path / self.OOF)
    test = property(lambda self: self.path / self.TEST)
    env = property(lambda self: self.path / self.ENV)
    curves = property(lambda self: self.path / self.CURVES)
    classes = property(lambda self: self.path / self.CLASSES)
    backup = property(lambda self: self.path / self.BACKUP)
    data = property(lambda self: self.path / self.DATA)

    @property
    def complete(self) -> bool:
        return run_complete(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"


def model_name(run_name: str) -> str:
    return FOLD_SUFFIX.sub("", run_name)

def run_complete(run_dir) -> bool:
    """A run is complete once 02_train has written metrics.json with ``"complete": true`` (its last write)."""
    m = Path(run_dir) / "metrics.json"
    return m.exists() and read_json(m).get("complete", False)


def full_data_run(run_dir) -> bool:
    """A full-data refit (``full_data`` in its params.yaml, ``lib.predict.refit``): it has no OOF."""
    p = Path(run_dir) / "params.yaml"
    return p.exists() and bool((yaml.safe_load(p.read_text(encoding="utf-8")) or {}).get("full_data"))


def recorded_config(run_dir) -> dict | None:
    """The recipe a run recorded in its params.yaml (None when there is none), with the settings
    added since it was written set to what it did (``lib.core.config.legacy_settings``)."""
    p = Path(run_dir) / "params.yaml"
    if not p.exists():
        return None
    return recorded_recipe(yaml.safe_load(p.read_text(encoding="utf-8")) or {})


def recorded_recipe(values: dict) -> dict:
    """A params.yaml's mapping with the settings added since it was written set to what that run did
    (``lib.core.config.legacy_settings``): comparable with ``TrainConfig.differences``."""
    return {**legacy_settings(values), **values}


def recipe_changes(run_dir, cfg: TrainConfig) -> dict:
    """{setting: (asked, recorded)} where ``cfg`` is another recipe than the one ``run_dir`` trained
    (``TrainConfig.differences``); {} when they match or nothing was trained there yet (a corrected
    rerun may change anything). Training refuses such a folder, the grid asks for ``--force``."""
    old = recorded_config(run_dir)
    if old is None or not (RunDir(run_dir).state.exists() or run_complete(run_dir)):
        return {}
    return cfg.differences(old)


def data_changes(run_dir, now: dict) -> list[str] | None:
    """What changed in the data ``run_dir`` trains on since its setup recorded it (its data.json), one
    readable line per file; [] when nothing did, None when it recorded nothing (a run made before
    data.json existed: it cannot be checked). ``now`` is the same record of the files as they are now
    (``lib.data.folds.data_record``): folds_csv, folds_sha1 (``lib.data.folds.folds_hash`` of it; None
    when there is none) and tables {recipe setting: {path, sha256 (None when the file is gone)}}.
    Resume and reuse refuse a run with changes (``lib.train.checkpoint.check_same_data``, the grid): it
    would validate on images it trained on, or say it learnt from tables it did not learn from."""
    record = RunDir(run_dir).data
    if not record.exists():
        return None
    then, out = read_json(record), []
    if then.get("folds_sha1") != now["folds_sha1"]:
        what = ("is gone (the next run splits anew)" if now["folds_sha1"] is None else
                f"was remade (folds hash {then.get('folds_sha1')} at setup, {now['folds_sha1']} now)")
        out.append(f"folds.csv {now['folds_csv']} {what}: its validation fold would hold images it trained on")
    tables = then.get("tables", {})
    for name in sorted(set(tables) | set(now["tables"])):
        old, new = tables.get(name) or {}, now["tables"].get(name) or {}
        if old.get("sha256") != new.get("sha256"):
            gone = bool(new) and new.get("sha256") is None
            out.append(f"{name} table {new.get('path') or old.get('path')} " + (
                "is gone" if gone else f"changed (sha256 {str(old.get('sha256'))[:12]} at setup, "
                                       f"{str(new.get('sha256'))[:12]} now)"))
    return out


def load_config(run_dir) -> TrainConfig:
    """A run's recipe (its params.yaml) as a ``TrainConfig``; an older run's missing settings are
    what it did (``lib.core.config.legacy_settings``: e.g. a doc_noise run of then trained with every flip)."""
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
    did not record is NaN. ``full_data=False`` leaves out full-data refits (``lib.predict.refit``: no OOF, no fold)."""
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
        df = df[df["complete"].astype(bool)]  # empty, the column is not bool: pandas would read it as column names
    return df.sort_values(["model", "fold"]).reset_index(drop=True)


def run_params(runs: pd.DataFrame, differing_only: bool = True) -> pd.DataFrame:
    """The parameters of each run (index run_name); with ``differing_only``, only those that differ."""
    rows = {r.run_name: yaml.safe_load((Path(r.dir) / "params.yaml").read_text(encoding="utf-8"))
            for r in runs.itertuples()}
    df = pd.DataFrame.from_dict(rows, orient="index").drop(columns=["run_name"], errors="ignore")
    if differing_only and len(df) > 1:
        df = df.loc[:, [c for c in df.columns if df[c].astype(str).nunique() > 1]]
    return df


def cv_epochs(runs_dir, model: str) -> int:
    """The epochs a full-data run of ``model`` trains: the median over its completed fold runs in
    ``runs_dir`` of the epoch whose weights they kept, counted from 1 (metrics.json's weights_epoch + 1)."""
    runs = find_runs(runs_dir, full_data=False)
    runs = runs[runs["model"] == model]
    if runs.empty:
        raise ValueError(f"no completed fold run of {model!r} in {resolve(runs_dir)}: train its folds first "
                         "(their chosen epochs set the full-data run's)")
    kept = [read_json(Path(d) / "metrics.json")["weights_epoch"] + 1 for d in runs["dir"]]
    return int(np.ceil(np.median(kept)))
