"""Starting a run from another run's weights (``init_from``), only where that cannot leak the fold.

    init_from: runs/resnet_s24_f{fold}       # in a recipe: the same fold's run ({fold} is this run's fold)

The other run's ``model.safetensors`` (safetensors only: loading it runs no code) replaces the
initial weights (``pretrained`` is then not loaded) when the run starts; a resume continues from its
own ``state.pt``. Refused unless the other run trained on the same split: the same ``fold`` of the
same ``n_folds`` (its params.yaml) and the same fold assignment, i.e. the same ``folds.csv``: its
metrics.json records ``folds_sha1`` (``folds_hash`` of the folds it used, written by every run); a
run from before that record must have validated on exactly this fold's images (its oof.csv). Any
other start would have trained on images this run validates on, and its OOF would look too good
(a ``full_data`` run, which trained on them all, included). A ``full_data`` run, which validates on
nothing, may start from any run.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from .io import read_json
from .paths import resolve


def folds_hash(folds: pd.DataFrame) -> str:
    """16 hex digits of the sha1 of the fold table (id, fold), sorted by id: equal for equal folds.csv."""
    rows = folds[["id", "fold"]].astype({"id": str, "fold": int}).sort_values("id")
    text = "\n".join(f"{i},{f}" for i, f in zip(rows["id"], rows["fold"]))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def init_run_dir(cfg) -> Path:
    """The folder ``init_from`` names: ``{fold}`` filled in, relative to the repo root or, failing
    that, to ``runs_dir``."""
    name = cfg.init_from.replace("{fold}", str(cfg.fold))
    path = resolve(name)
    if not path.exists() and (resolve(cfg.runs_dir) / name).exists():
        path = resolve(cfg.runs_dir) / name
    return path


def init_weights_file(cfg, run_dir: Path, folds: pd.DataFrame) -> Path | None:
    """The weights a fresh run of ``cfg`` starts from (``init_from``'s model.safetensors), after the
    checks above; None without ``init_from`` or when the run resumes from its state.pt."""
    if not cfg.init_from or (cfg.resume and (run_dir / "state.pt").exists()):
        return None
    src = init_run_dir(cfg)
    where = f"init_from {cfg.init_from!r} ({src})"
    weights, params = src / "model.safetensors", src / "params.yaml"
    if not weights.is_file() or not params.is_file():
        raise FileNotFoundError(f"{where}: not a trained run folder (needs model.safetensors and params.yaml); "
                                "give a run folder, e.g. runs/<run_name>, or runs/<model>_f{fold} for this fold's")
    if src.resolve() == resolve(run_dir).resolve():
        raise ValueError(f"{where} is this run's own folder; give another run's")
    from .runs import recorded_config
    theirs = recorded_config(src)
    if theirs.get("full_data") and not cfg.full_data:
        raise ValueError(f"{where} trained on every image (full_data), this run's validation fold {cfg.fold} "
                         "included: its OOF would leak; start from a run of the same fold")
    if cfg.full_data:
        return weights  # no validation fold to keep clean
    if (theirs.get("fold"), theirs.get("n_folds")) != (cfg.fold, cfg.n_folds):
        raise ValueError(f"{where} is fold {theirs.get('fold')} of {theirs.get('n_folds')} folds, this run fold "
                         f"{cfg.fold} of {cfg.n_folds}: that run trained on images this run validates on (a leaky "
                         "OOF); start from the same fold's run (a {fold} in init_from picks it per fold)")
    check_same_split(src, cfg.fold, folds, where, remedy=", or start without init_from")
    return weights


def check_same_split(src: Path, fold: int, folds: pd.DataFrame, where: str, remedy: str = "") -> None:
    """Raise ValueError unless the fold run in ``src`` held out fold ``fold`` of exactly this fold
    table ``folds`` (id, fold): the ``folds_sha1`` its metrics.json records or, for a run from before
    that record, the ids of its oof.csv. ``where`` names the run in the message, ``remedy`` ends it."""
    mine = folds_hash(folds)
    metrics = read_json(src / "metrics.json") if (src / "metrics.json").exists() else {}
    if "folds_sha1" in metrics:
        if metrics["folds_sha1"] != mine:
            raise ValueError(f"{where} was trained on another fold assignment (folds.csv hash {metrics['folds_sha1']}, "
                             f"this one's {mine}): its fold {fold} is not this one, so it trained on images "
                             f"held out here; retrain it on the current folds.csv{remedy}")
        return
    if not (src / "oof.csv").exists():
        raise ValueError(f"{where}: its metrics.json records no folds hash (folds_sha1) and it has no oof.csv to "
                         f"compare fold images with; let it complete (rerun it){remedy}")
    theirs_ids = set(pd.read_csv(src / "oof.csv", usecols=["id"], dtype={"id": str})["id"])
    if theirs_ids != set(folds.loc[folds["fold"] == fold, "id"].astype(str)):
        raise ValueError(f"{where} validated on other images than fold {fold} (its oof.csv): another "
                         f"folds.csv (or max_samples); retrain it on the current folds.csv{remedy}")
