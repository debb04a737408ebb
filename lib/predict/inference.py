"""Predictions of trained models: a loader averaged over TTA ops, a run's fold re-predicted from
its files, and each model's test (and OOF) predictions for the ensemble.

    probs = predict_loader(model, loader, ["identity", "hflip"], device)     # [N, C]
    df = predict_fold("runs/convnext_tiny_f0", ["identity", "hflip"], split="test")   # id + classes
    tests, oofs_tta = tta_predictions(runs, classes, ["identity", "hflip"], oof=True)

A run is rebuilt from its ``params.yaml`` (the recipe, ``lib.core.config``) and ``model.safetensors``
with the same builders training used (``lib.train.build``): its images go through the validation
transform with the backbone's mean/std, exactly as in training's ``write_predictions``.
Re-predicted tables keep the ids and row order of the run's own test.csv / oof.csv, so they
replace them one for one.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lib.core.device import default_num_workers, pick_device
from lib.core.metrics import accuracy, f1_macro, log_loss
from lib.core.paths import resolve
from lib.core.precision import amp_dtype
from lib.core.rundir import RunDir, load_config
from lib.data.competition import Competition, open_competition
from lib.data.dataset import image_dataset
from lib.model.backbones import load_weights
from lib.model.factory import build_model
from lib.model.forward import predict_loader
from lib.model.tta import get_tta
from lib.predict.oof import fold_mean

SPLITS = ("test", "oof")


def predict_fold(run_dir, ops=("identity",), split: str = "test", space: str = "prob",
                 batch_size: int | None = None, device: str | None = None, num_workers: int | None = None,
                 progress: bool = False) -> pd.DataFrame:
    """Probabilities of a completed run's model on its test set or its OOF fold, averaged over the
    TTA ``ops`` (names from ``lib.model.tta``) in ``space`` "prob" or "logit".

    Returns id + one column per class (split="test", rows as in the run's test.csv) or id, fold,
    target + classes (split="oof", rows as in its oof.csv). ``batch_size`` defaults to twice the
    run's; images come from the pre-resized cache when the run used one.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    run_dir = resolve(run_dir)
    files = {f: run_dir / f for f in (*RunDir.PREDICT, f"{split}.csv")}
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{run_dir} is not a completed run: missing {missing}; finish it with "
                                "02_train (rerunning resumes it)")
    ops = get_tta(list(ops))  # fail on a bad name before any work
    cfg = load_config(run_dir).replace(progress=progress)
    comp = open_competition(cfg.data_dir)
    table = comp.test if split == "test" else comp.train
    ref = pd.read_csv(files[f"{split}.csv"], dtype={"id": str})
    unknown = ref.loc[~ref["id"].isin(set(table["id"])), "id"]
    if len(unknown):
        raise ValueError(f"{files[f'{split}.csv']}: {len(unknown)} ids (e.g. {unknown.iloc[0]!r}) are not "
                         f"{split} images of {comp.root} now; was the data changed after training?")
    rows = table.set_index("id").loc[ref["id"]].reset_index()
    probs = predict_images(run_dir, comp, "test" if split == "test" else "train", rows, ops, space, batch_size,
                           device, num_workers, progress)
    keep = ["id"] if split == "test" else ["id", "fold", "target"]
    return pd.concat([ref[keep].reset_index(drop=True), pd.DataFrame(probs, columns=comp.classes)], axis=1)


def predict_images(run_dir, comp: Competition, split: str, rows: pd.DataFrame, ops=("identity",),
                   space: str = "prob", batch_size: int | None = None, device: str | None = None,
                   num_workers: int | None = None, progress: bool = False) -> np.ndarray:
    """Probabilities [N, C] of a completed run's best weights on ``rows`` (id, path) of ``comp``'s
    ``split`` table, averaged over the TTA ``ops``. The model and the image pipeline are built from
    the run's recipe alone (``params.yaml``, ``model.safetensors``), as in training."""
    run_dir = resolve(run_dir)
    cfg = load_config(run_dir).replace(progress=progress)
    model, data_cfg = build_model(cfg, comp.num_classes, pretrained="none")
    load_weights(model, run_dir / RunDir.WEIGHTS)
    ds = image_dataset(cfg, comp, split, rows, "none", data_cfg, targets=False)
    dev = pick_device(device, verbose=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size or 2 * cfg.batch_size,
                                         num_workers=default_num_workers(dev, num_workers))
    return predict_loader(model.to(dev), loader, list(ops), dev, space=space,
                          dtype=amp_dtype(dev, cfg.precision), progress=progress)


def tta_predictions(runs: pd.DataFrame, classes: list[str], ops=("identity",), space: str = "prob",
                    oof: bool = False, by_run: bool = False, **kwargs) -> tuple:
    """(tests, oofs) per model for the runs of ``lib.core.rundir.find_runs`` (with ``by_run``, a third item:
    each run's own test predictions {run_name: id + classes}, what ``lib.predict.calibrate`` compares with).

    tests: id + classes, the mean over the model's folds. With ops == ["identity"] these are read
    from the runs' test.csv; otherwise every run is re-predicted with ``predict_fold`` (``kwargs``
    go to it). oofs: with ``oof`` and TTA ops, each model's re-predicted OOF (id, fold, target +
    classes, sorted by id) to measure TTA's gain; else None.
    """
    ops = [ops] if isinstance(ops, str) else list(ops)
    get_tta(ops)
    plain = ops == ["identity"]
    if not plain and not oof:
        warnings.warn(f"TTA {ops} on test only: the blend weights and temperature will be fitted on OOF "
                      "predictions made without TTA, which are sharper than the TTA test predictions; "
                      "set tta_oof=True to fit them on TTA OOF", stacklevel=2)
    per_run = {r.run_name: pd.read_csv(Path(r.dir) / RunDir.TEST, dtype={"id": str}) if plain
               else predict_fold(r.dir, ops, "test", space, **kwargs) for r in runs.itertuples()}
    tests = {model: fold_mean([per_run[r] for r in g["run_name"]], g["dir"], classes)
             for model, g in runs.groupby("model", sort=True)}
    oofs = None
    if oof and not plain:
        oofs = {model: pd.concat([predict_fold(d, ops, "oof", space, **kwargs) for d in g["dir"]], ignore_index=True)
                .sort_values("id").reset_index(drop=True) for model, g in runs.groupby("model", sort=True)}
    return (tests, oofs, per_run) if by_run else (tests, oofs)

def tta_gain(oofs: dict, oofs_tta: dict, classes: list[str]) -> pd.DataFrame:
    """Per model, on the ids re-predicted with TTA: log_loss, accuracy, f1_macro without and with
    TTA, and log_loss_gain = plain - TTA (> 0: TTA helps)."""
    rows = []
    for m, t in oofs_tta.items():
        base = oofs[m].set_index("id").loc[t["id"]]
        y = t["target"].to_numpy(np.int64)
        a, b = base[classes].to_numpy(np.float64), t[classes].to_numpy(np.float64)
        row = {"model": m, "n": len(t)}
        for name, fn in (("log_loss", log_loss), ("accuracy", accuracy), ("f1_macro", f1_macro)):
            row[name], row[f"{name}_tta"] = fn(y, a), fn(y, b)
        row["log_loss_gain"] = row["log_loss"] - row["log_loss_tta"]
        rows.append(row)
    return pd.DataFrame(rows)


def untrained_ops(ops, aug: str, hflip: bool, vflip: bool, rot90: bool) -> list[str]:
    """The ops of ``ops`` a run trained with preset ``aug`` and these flip settings never saw: hflip needs
    horizontal flips, vflip vertical ones, rot90 and rot270 the 90-degree rotations, rot180 those or
    both flips; identity and scale ops need nothing. Preset "none" trains without flips."""
    if aug == "none":
        hflip = vflip = rot90 = False
    ok = {"hflip": hflip, "vflip": vflip, "rot90": rot90, "rot270": rot90, "rot180": rot90 or (hflip and vflip)}
    return [o for o in ops if o in ok and not ok[o]]


def check_tta_ops(runs, ops, gain=None) -> dict[str, list[str]]:
    """{run_name: ops it never trained with} for the runs of ``runs`` (``lib.core.rundir.find_runs``: run_name,
    model, dir) and the TTA op names ``ops`` (see ``untrained_ops``; a run's flips are read from its
    params.yaml, an older run's being what its preset did then: light/medium/heavy hflip, doc_noise all).

    Such ops are named in a warning. They are refused (ValueError) unless ``gain``, the table of
    ``lib.predict.inference.tta_gain`` measured with these ops, shows log_loss_gain > 0 for every model whose
    runs lack one of them. Returns the dict ({} when every run trained with every op)."""

    ops = [ops] if isinstance(ops, str) else list(ops)
    get_tta(ops)  # a bad name fails here
    missing = {}
    for r in runs.itertuples():
        cfg = load_config(r.dir)
        bad = untrained_ops(ops, cfg.aug, cfg.hflip, cfg.vflip, cfg.rot90)
        if bad:
            missing[r.run_name] = bad
    if not missing:
        return {}
    named = "; ".join(f"{run}: {', '.join(bad)}" for run, bad in missing.items())
    warnings.warn(f"TTA ops the runs never trained with (their flip settings hflip, vflip, rot90): {named}",
                  stacklevel=2)
    models = runs.set_index("run_name").loc[list(missing), "model"].unique()
    measured = {} if gain is None else dict(zip(gain["model"], gain["log_loss_gain"]))
    unproven = [m for m in models if not measured.get(m, float("nan")) > 0]
    if unproven:
        why = ", ".join(f"{m} ({'not measured' if m not in measured else f'log_loss_gain {measured[m]:.4g}'})"
                        for m in unproven)
        raise ValueError(f"TTA {ops}: runs never trained with some of these ops ({named}) and no measured OOF "
                         f"gain shows they help model(s) {why}; drop those ops from tta, or set tta_oof=True "
                         "to measure their gain on the OOF folds (accepted once TTA lowers the OOF log loss of "
                         "every model that lacks them)")
    return missing
