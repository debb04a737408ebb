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

from pathlib import Path

import pandas as pd

from lib.core.paths import resolve
from lib.core.rundir import RunDir, recorded_config
from lib.data.folds import check_same_split


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
    if not cfg.init_from or (cfg.resume and (run_dir / RunDir.STATE).exists()):
        return None
    src = init_run_dir(cfg)
    where = f"init_from {cfg.init_from!r} ({src})"
    weights, params = src / RunDir.WEIGHTS, src / RunDir.PARAMS
    if not weights.is_file() or not params.is_file():
        raise FileNotFoundError(f"{where}: not a trained run folder (needs model.safetensors and params.yaml); "
                                "give a run folder, e.g. runs/<run_name>, or runs/<model>_f{fold} for this fold's")
    if src.resolve() == resolve(run_dir).resolve():
        raise ValueError(f"{where} is this run's own folder; give another run's")
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
