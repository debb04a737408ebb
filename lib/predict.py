"""Final predictions: runs re-predicted with test-time augmentation, and the blended, calibrated
submission.

    df = predict_run("runs/convnext_tiny_f0", ["identity", "hflip"], split="test")   # id + classes
    tests, oofs_tta = tta_predictions(runs, classes, ["identity", "hflip"], oof=True)
    b = fit_blend(oofs, classes, metric="log_loss")       # weights + temperature fitted on OOF
    write_ensemble(b, tests, comp, "runs", "runs/submission.csv")

A run is rebuilt from its params.yaml (data_dir, backbone, pool, img_size, batch_size, cache) and
model.safetensors; its images go through the validation transform (``get_augment("none", ...)``
with the backbone's mean/std), exactly as in training's ``predict``. Re-predicted tables keep the
ids and row order of the run's own test.csv / oof.csv, so they replace them one for one.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import yaml

from .augment import get_augment
from .backbones import create_backbone, load_weights
from .data import Competition, scan_competition
from .dataset import ImageDataset, build_cache
from .device import default_num_workers, pick_device, use_autocast
from .ensemble import blend, blend_report, fit_blend_weights, make_submission, write_submission
from .io import write_csv
from .metrics import (accuracy, apply_temperature, f1_macro, fit_temperature, log_loss, probs_to_logits,
                      score)
from .paths import resolve
from .runs import common_ids, fold_mean, load_test
from .tta import get_tta, predict_tta

SPLITS = ("test", "oof")


def predict_run(run_dir, ops=("identity",), split: str = "test", space: str = "prob",
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
    p = yaml.safe_load(files["params.yaml"].read_text(encoding="utf-8")) or {}
    comp = scan_competition(resolve(p["data_dir"]), verbose=False)
    table = comp.test if split == "test" else comp.train
    ref = pd.read_csv(files[f"{split}.csv"], dtype={"id": str})
    pos = pd.Series(np.arange(len(table)), index=table["id"].to_numpy())
    unknown = ref.loc[~ref["id"].isin(pos.index), "id"]
    if len(unknown):
        raise ValueError(f"{files[f'{split}.csv']}: {len(unknown)} ids (e.g. {unknown.iloc[0]!r}) are not "
                         f"{split} images of {comp.root} now; was the data changed after training?")
    rows = pos.loc[ref["id"]].to_numpy()

    size = int(p["img_size"])
    model, cfg = create_backbone(p["backbone"], comp.num_classes, pretrained="none", pool=p.get("pool", "avg"),
                                 model_kwargs=p.get("model_kwargs"))
    load_weights(model, files["model.safetensors"])
    cache = (build_cache(table["path"].tolist(), size, comp.root / "cache", "test" if split == "test" else "train",
                         progress=progress) if p.get("cache", True) else None)
    ds = ImageDataset(table["path"].iloc[rows], None, get_augment("none", size, cfg["mean"], cfg["std"]), size,
                      cache, rows if cache is not None else None)
    dev = pick_device(device, verbose=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size or 2 * int(p.get("batch_size", 32)),
                                         num_workers=default_num_workers(dev, num_workers))
    probs = predict_tta(model.to(dev), loader, ops, dev, space=space, amp=use_autocast(dev, p.get("precision", "auto")),
                        progress=progress)
    keep = ["id"] if split == "test" else ["id", "fold", "target"]
    return pd.concat([ref[keep].reset_index(drop=True), pd.DataFrame(probs, columns=comp.classes)], axis=1)


def tta_predictions(runs: pd.DataFrame, classes: list[str], ops=("identity",), space: str = "prob",
                    oof: bool = False, **kwargs) -> tuple[dict, dict | None]:
    """(tests, oofs) per model for the runs of ``lib.runs.find_runs``.

    tests: id + classes, the mean over the model's folds. With ops == ["identity"] these are read
    from the runs' test.csv; otherwise every run is re-predicted with ``predict_run`` (``kwargs``
    go to it). oofs: with ``oof`` and TTA ops, each model's re-predicted OOF (id, fold, target +
    classes, sorted by id) to measure TTA's gain; else None.
    """
    ops = [ops] if isinstance(ops, str) else list(ops)
    get_tta(ops)
    if ops == ["identity"]:
        return load_test(runs, classes), None
    if not oof:
        warnings.warn(f"TTA {ops} on test only: the blend weights and temperature will be fitted on OOF "
                      "predictions made without TTA, which are sharper than the TTA test predictions; "
                      "set tta_oof=True to fit them on TTA OOF", stacklevel=2)
    tests, oofs = {}, {} if oof else None
    for model, g in runs.groupby("model", sort=True):
        tests[model] = fold_mean([predict_run(d, ops, "test", space, **kwargs) for d in g["dir"]], g["dir"], classes)
        if oof:
            full = pd.concat([predict_run(d, ops, "oof", space, **kwargs) for d in g["dir"]], ignore_index=True)
            oofs[model] = full.sort_values("id").reset_index(drop=True)
    return tests, oofs


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


@dataclass
class Blend:
    """Blend fitted on OOF: model names, weights [M] (sum 1), temperature T, space, the shared ids
    [N], their targets y [N], the blended OOF probabilities [N, C] before (``uncalibrated``) and
    after the temperature (``probs``), and the report table."""
    models: list
    weights: np.ndarray
    temperature: float
    space: str
    ids: list
    y: np.ndarray
    uncalibrated: np.ndarray
    probs: np.ndarray
    report: pd.DataFrame


def fit_blend(oofs: dict, classes: list[str], metric: str = "log_loss", space: str = "prob",
              temperature: bool = True) -> Blend:
    """Fit blend weights on the OOF rows all models share (``fit_blend_weights``: >= 0, sum 1,
    optimising ``metric``), then a temperature on the blend (never worsening OOF log loss).

    The report (``blend_report``: each model, equal weights, fitted weights) gets a final
    ``calibrated_blend`` row (its weights cell ends with "; T=..."; T=1 when ``temperature`` is off).
    """
    models = sorted(oofs)
    ids = common_ids(oofs)
    if not ids:
        raise ValueError(f"models {models} share no OOF ids; were they trained on the same data and folds?")
    short = {m: len(o) for m, o in oofs.items() if len(o) > len(ids)}
    if short:
        warnings.warn(f"blend fitted on the {len(ids)} OOF ids all models share ({short} have more)",
                      stacklevel=2)
    aligned = [oofs[m].set_index("id").loc[ids] for m in models]
    y = aligned[0]["target"].to_numpy(np.int64)
    for m, a in zip(models, aligned):
        if not np.array_equal(a["target"].to_numpy(np.int64), y):
            raise ValueError(f"model {m} gives other targets than {models[0]} for the same ids")
    arrs = [a[classes].to_numpy(np.float64) for a in aligned]
    w = fit_blend_weights(arrs, y, metric, space)
    report = blend_report(dict(zip(models, arrs)), y, w, metric, space)
    raw = blend(arrs, w, space)
    logits = probs_to_logits(raw)
    T = fit_temperature(logits, y) if temperature else 1.0
    probs = apply_temperature(logits, T)
    last = {"model": "calibrated_blend", "weights": f"{report['weights'].iloc[-1]}; T={T:.4g}",
            **{c: score(c, y, probs) for c in report.columns[2:]}}
    report = pd.concat([report, pd.DataFrame([last])], ignore_index=True)
    return Blend(models, w, T, space, ids, y, raw, probs, report)


def blend_test(b: Blend, tests: dict, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(ids [N], probs [N, C]): the models' test predictions blended with ``b``'s weights and T."""
    missing = [m for m in b.models if m not in tests]
    if missing:
        raise ValueError(f"no test predictions for models {missing}")
    ids = tests[b.models[0]]["id"]
    arrs = []
    for m in b.models:
        t = tests[m]
        if set(t["id"]) != set(ids) or len(t) != len(ids):
            raise ValueError(f"model {m} predicts other test ids than {b.models[0]}")
        arrs.append(t.set_index("id").loc[ids, classes].to_numpy(np.float64))
    return ids.to_numpy(), apply_temperature(probs_to_logits(blend(arrs, b.weights, b.space)), b.temperature)


def write_ensemble(b: Blend, tests: dict, comp: Competition, runs_dir="runs",
                   submission="runs/submission.csv") -> pd.DataFrame:
    """Write the submission (sample_submission's ids, row and column order; validated before
    writing), ``<runs_dir>/ensemble/blend_report.csv``, ``oof_blend.csv`` (id, target, classes) and
    ``test_<model>.csv``: each single model's test predictions (its folds' mean, with the same TTA) as
    a submission, to compare with the blend on the leaderboard. Returns the submission."""
    if comp.sample_submission is None:
        raise FileNotFoundError(f"{comp.root}/sample_submission.csv is missing: it fixes the submission's "
                                "ids and columns; copy it from the competition")
    ids, probs = blend_test(b, tests, comp.classes)
    sub = make_submission(probs, ids, comp.sample_submission)
    write_submission(sub, resolve(submission), comp.sample_submission)
    out = resolve(runs_dir) / "ensemble"
    write_csv(out / "blend_report.csv", b.report)
    oof = pd.DataFrame(b.probs, columns=comp.classes)
    oof.insert(0, "target", b.y), oof.insert(0, "id", b.ids)
    write_csv(out / "oof_blend.csv", oof)
    for m in b.models:
        t = tests[m].set_index("id").loc[ids, comp.classes].to_numpy(np.float64)
        write_submission(make_submission(t, ids, comp.sample_submission), out / f"test_{m}.csv", comp.sample_submission)
    return sub
