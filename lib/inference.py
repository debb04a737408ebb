"""Predictions of trained models: a loader averaged over TTA ops, a run's fold re-predicted from
its files, and each model's test (and OOF) predictions for the ensemble.

    probs = predict_loader(model, loader, ["identity", "hflip"], device)     # [N, C]
    df = predict_fold("runs/convnext_tiny_f0", ["identity", "hflip"], split="test")   # id + classes
    tests, oofs_tta = tta_predictions(runs, classes, ["identity", "hflip"], oof=True)

A run is rebuilt from its ``params.yaml`` (the recipe, ``lib.config``) and ``model.safetensors``
with the same builders training used (``lib.build``): its images go through the validation
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
from tqdm import tqdm

from .backbones import load_weights
from .build import build_model, image_dataset
from .data import Competition, open_competition, open_test_set
from .device import default_num_workers, pick_device
from .metrics import accuracy, f1_macro, log_loss
from .paths import resolve
from .precision import amp_dtype
from .runs import fold_mean, load_config
from .tta import get_tta

SPLITS = ("test", "oof")


@torch.no_grad()
def predict_loader(model: torch.nn.Module, loader, ops, device, space: str = "prob",
                   dtype: torch.dtype | None = None, progress: bool = True) -> np.ndarray:
    """Class probabilities [N, C] (float64, rows sum to 1) averaged over TTA ops.

    ``loader`` yields batches ``(x, ...)`` (or bare x) with x a FloatTensor [B, 3, H, W], already
    normalised; ``ops`` are op names or callables (see ``get_tta``). For each op the model's logits
    go through a softmax; ops are averaged as probabilities (``space="prob"``) or as
    log-probabilities followed by a softmax (``space="logit"``). The model runs in eval mode under
    no_grad (its training flag is restored afterwards), under autocast to ``dtype`` (the run's
    training dtype, ``lib.device.amp_dtype``) when given.
    """
    if space not in ("prob", "logit"):
        raise ValueError(f"space must be 'prob' or 'logit', got {space!r}")
    if isinstance(ops, str):
        ops = [ops]
    ops = [get_tta([o])[0] if isinstance(o, str) else o for o in ops]
    if not ops:
        raise ValueError("ops is empty; use ['identity'] for plain predictions")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    out = []
    try:
        for batch in tqdm(loader, desc="tta", leave=False, mininterval=5, disable=not progress):
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            x = x.to(device, non_blocking=True)
            acc = None
            for op in ops:
                with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None):
                    logits = model(op(x))
                logp = torch.log_softmax(logits.float(), dim=1)
                part = logp.exp() if space == "prob" else logp
                acc = part if acc is None else acc + part
            acc = acc / len(ops)
            probs = acc if space == "prob" else torch.softmax(acc, dim=1)
            out.append(probs.float().cpu().double().numpy())  # MPS has no float64
    finally:
        model.train(was_training)
    if not out:
        raise ValueError("the loader yielded no batches")
    return np.concatenate(out)


def predict_fold(run_dir, ops=("identity",), split: str = "test", space: str = "prob",
                 batch_size: int | None = None, device: str | None = None, num_workers: int | None = None,
                 progress: bool = False) -> pd.DataFrame:
    """Probabilities of a completed run's model on its test set or its OOF fold, averaged over the
    TTA ``ops`` (names from ``lib.tta``) in ``space`` "prob" or "logit".

    Returns id + one column per class (split="test", rows as in the run's test.csv) or id, fold,
    target + classes (split="oof", rows as in its oof.csv). ``batch_size`` defaults to twice the
    run's; images come from the pre-resized cache when the run used one.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    run_dir = resolve(run_dir)
    files = {f: run_dir / f for f in ("params.yaml", "model.safetensors", f"{split}.csv")}
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
    load_weights(model, run_dir / "model.safetensors")
    ds = image_dataset(cfg, comp, split, rows, "none", data_cfg, targets=False)
    dev = pick_device(device, verbose=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size or 2 * cfg.batch_size,
                                         num_workers=default_num_workers(dev, num_workers))
    return predict_loader(model.to(dev), loader, list(ops), dev, space=space,
                          dtype=amp_dtype(dev, cfg.precision), progress=progress)


def predict_submission(data_dir, runs_dir="runs", submission="runs/submission.csv", models=None, tta=None,
                       work: str | None = None, progress: bool = False) -> pd.DataFrame:
    """The submission for whatever test set ``data_dir`` holds now (a hidden one included), from the
    trained runs alone: 04's ``ensemble/blend.json`` (models, their runs, weights, temperature, TTA,
    class table) and each run's ``params.yaml`` and ``model.safetensors``. No training image, fold
    or class file is read. ``models`` keeps a subset (weights renormalised); ``tta`` replaces 04's
    ops. Written like 04's (validated against the sample); returns it."""
    from .blend import blend_tests
    from .submission import load_blend, make_submission, write_submission

    runs_dir = resolve(runs_dir)
    plan = load_blend(runs_dir / "ensemble" / "blend.json")
    table = plan["class_table"]
    comp = open_test_set(data_dir, table, work)
    chosen = [m for m in plan["models"] if models is None or m in models]
    if not chosen:
        raise ValueError(f"models {models} are not in the blend; it has {list(plan['models'])}")
    ops = tta or plan["tta"]
    tests = {}
    for m in chosen:
        dirs = [runs_dir / r for r in plan["models"][m]]
        missing = [str(d / f) for d in dirs for f in ("params.yaml", "model.safetensors") if not (d / f).exists()]
        if missing:
            raise FileNotFoundError(f"the blend needs {missing[:3]}; copy the runs (or make a bundle) with them")
        probs = np.mean([predict_images(d, comp, "test", comp.test, ops, plan["tta_space"], progress=progress)
                         for d in dirs], axis=0)
        refit = (plan.get("refit") or {}).get(m)  # 04's full-data refit of the model, mixed in (lib.refit)
        if refit:
            full = predict_images(runs_dir / refit["run"], comp, "test", comp.test, ops, plan["tta_space"],
                                  progress=progress)
            probs = (1 - refit["share"]) * probs + refit["share"] * full
        tests[m] = pd.concat([comp.test[["id"]], pd.DataFrame(probs, columns=comp.classes)], axis=1)
    weights = np.array([plan["weights"][m] for m in chosen])
    if weights.sum() <= 0:
        raise ValueError(f"models {chosen} have zero weight in the blend; choose others")
    offsets = plan.get("offsets")  # the decision layer's, per class name (None: plain argmax)
    offsets = [offsets[c] for c in comp.classes] if offsets else None
    ids, probs = blend_tests(tests, chosen, weights, plan["space"], plan["temperature"], comp.classes, offsets)
    sub = make_submission(probs, ids, comp.sample_submission, label_values=comp.label_values)
    write_submission(sub, resolve(submission), comp.sample_submission, comp.label_values)
    return sub


def tta_predictions(runs: pd.DataFrame, classes: list[str], ops=("identity",), space: str = "prob",
                    oof: bool = False, by_run: bool = False, **kwargs) -> tuple:
    """(tests, oofs) per model for the runs of ``lib.runs.find_runs`` (with ``by_run``, a third item:
    each run's own test predictions {run_name: id + classes}, what ``lib.calibrate`` compares with).

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
    per_run = {r.run_name: pd.read_csv(Path(r.dir) / "test.csv", dtype={"id": str}) if plain
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
