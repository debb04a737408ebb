"""Predictions of trained models: a loader averaged over TTA ops, a run's fold re-predicted from
its files, and each model's test (and OOF) predictions for the ensemble.

    spec = PredictSpec(["identity", "hflip"], "prob", progress=True)     # how to predict, in one value
    probs = predict_loader(model, loader, spec.ops, device)                # [N, C]
    df = predict_fold("runs/convnext_tiny_f0", spec, split="test")         # id + classes
    tests, oofs_tta = tta_predictions(runs, classes, spec, oof=True)

A run is rebuilt from its ``params.yaml`` (the recipe, ``lib.core.config``) and ``model.safetensors``
by ``lib.model.factory.load_trained``, with the same builders training used: its images go through
the validation transform with the backbone's mean/std, exactly as in training's ``write_predictions``.
Re-predicted tables keep the ids and row order of the run's own test.csv / oof.csv, so they
replace them one for one.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
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
from lib.model.factory import check_input_size, load_trained
from lib.model.forward import predict_loader
from lib.model.tta import get_tta
from lib.predict.oof import fold_mean

SPLITS = ("test", "oof")
SPACES = ("prob", "logit")


@dataclass(frozen=True)
class PredictSpec:
    """How trained runs are re-predicted, one value for ``predict_fold``, ``predict_images``,
    ``tta_predictions``, ``lib.predict.refit.refit_tests``, ``lib.predict.teacher.teacher_table`` and
    ``lib.predict.pipeline.predict_submission``.

    ops: TTA op names (``lib.model.tta``; a bare name is one op), checked when the spec is made;
    space: "prob" averages the ops' softmax probabilities, "logit" their log-probabilities followed
    by a softmax; batch_size: images per forward pass (None: twice the run's training batch size);
    device: "cuda", "cuda:1", "mps", "cpu" (None: the best available, ``lib.core.device.pick_device``);
    num_workers: DataLoader worker processes (None: ``lib.core.device.default_num_workers``);
    progress: progress bars; size: the pixels every run predicts at (a run trained at 384 may predict
    better at 448: its training crops showed objects larger than a resized whole image does), the
    images made the way the run's validation made them (its ``presize`` and ``resize``); None: each
    run's own ``img_size``. The default spec is a plain prediction: identity, own size, no bars."""
    ops: tuple[str, ...] = ("identity",)
    space: str = "prob"
    batch_size: int | None = None
    device: str | None = None
    num_workers: int | None = None
    progress: bool = False
    size: int | None = None

    def __post_init__(self):
        ops = (self.ops,) if isinstance(self.ops, str) else tuple(self.ops)
        object.__setattr__(self, "ops", ops)
        get_tta(list(ops))  # a bad name fails here, before any work
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {self.space!r}")
        if self.size is not None and (isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1):
            raise ValueError(f"size {self.size!r}: the pixels to predict at (an int >= 1), or None for each "
                             "run's img_size")

    @property
    def plain(self) -> bool:
        """No TTA (ops == identity) at each run's own size: a run's own test.csv / oof.csv already hold
        these predictions."""
        return self.ops == ("identity",) and self.size is None


def predict_fold(run_dir, spec: PredictSpec | None = None, split: str = "test") -> pd.DataFrame:
    """Probabilities of a completed run's model on its test set or its OOF fold, predicted as ``spec``
    says (TTA ops, space, batch size, device, workers, progress; None: ``PredictSpec()``, plain).

    Returns id + one column per class (float64 probabilities, rows summing to 1): split="test" in
    the rows of the run's test.csv, split="oof" with id, fold, target first, in the rows of its
    oof.csv. Images come from the pre-resized cache when the run used one.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    spec = spec or PredictSpec()
    run_dir = resolve(run_dir)
    files = {f: run_dir / f for f in (*RunDir.PREDICT, f"{split}.csv")}
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{run_dir} is not a completed run: missing {missing}; finish it with "
                                "02_train (rerunning resumes it)")
    cfg = load_config(run_dir)
    comp = open_competition(cfg.data_dir)
    table = comp.test if split == "test" else comp.train
    ref = pd.read_csv(files[f"{split}.csv"], dtype={"id": str})
    unknown = ref.loc[~ref["id"].isin(set(table["id"])), "id"]
    if len(unknown):
        raise ValueError(f"{files[f'{split}.csv']}: {len(unknown)} ids (e.g. {unknown.iloc[0]!r}) are not "
                         f"{split} images of {comp.root} now; was the data changed after training?")
    rows = table.set_index("id").loc[ref["id"]].reset_index()
    probs = predict_images(run_dir, comp, "test" if split == "test" else "train", rows, spec)
    keep = ["id"] if split == "test" else ["id", "fold", "target"]
    return pd.concat([ref[keep].reset_index(drop=True), pd.DataFrame(probs, columns=comp.classes)], axis=1)


def predict_images(run_dir, comp: Competition, split: str, rows: pd.DataFrame,
                   spec: PredictSpec | None = None) -> np.ndarray:
    """Probabilities [N, C] (float64, rows summing to 1; N = len(rows), C = comp's classes) of a
    completed run's kept weights on ``rows`` (id, path) of ``comp``'s ``split`` table ("train" or
    "test"), predicted as ``spec`` says (None: plain). The model and the image pipeline are built from
    the run's recipe alone (``params.yaml``, ``model.safetensors``: ``load_trained``), as in training;
    at ``spec.size`` (when given) the run's validation pipeline at that size."""
    spec = spec or PredictSpec()
    run_dir = resolve(run_dir)
    model, cfg, data_cfg = load_trained(run_dir, comp.num_classes)
    cfg = cfg.replace(progress=spec.progress)
    if spec.size is not None and spec.size != cfg.img_size:
        check_input_size(model, cfg.backbone, spec.size)  # e.g. a ViT of fixed size fails here, by name
        cfg = cfg.replace(img_size=spec.size, stages=None)  # its last stage's size is what it trained at
    ds = image_dataset(cfg, comp, split, rows, "none", data_cfg, targets=False)
    dev = pick_device(spec.device, verbose=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=spec.batch_size or 2 * cfg.batch_size,
                                         num_workers=default_num_workers(dev, spec.num_workers))
    return predict_loader(model.to(dev), loader, list(spec.ops), dev, space=spec.space,
                          dtype=amp_dtype(dev, cfg.precision), progress=spec.progress)


def tta_predictions(runs: pd.DataFrame, classes: list[str], spec: PredictSpec | None = None,
                    oof: bool = False, by_run: bool = False) -> tuple:
    """(tests, oofs) per model for the runs of ``lib.core.rundir.find_runs`` (with ``by_run``, a third item:
    each run's own test predictions {run_name: id + classes}, what ``lib.predict.calibrate`` compares with).

    tests: {model: id + classes (float64 probabilities)}, the mean over the model's folds. With a plain
    ``spec`` (ops identity, no size; None is plain) these are read from the runs' test.csv; otherwise every
    run is re-predicted with ``predict_fold`` and ``spec``. oofs: with ``oof`` and a spec that is not plain
    (TTA ops, a size), each model's re-predicted OOF (id, fold, target + classes, sorted by id) to measure
    its gain; else None.
    """
    spec = spec or PredictSpec()
    if not spec.plain and not oof:
        how = f"TTA {list(spec.ops)}" + (f" at {spec.size} px" if spec.size is not None else "")
        warnings.warn(f"{how} on test only: the blend weights and temperature will be fitted on OOF predictions "
                      "made without it, which differ in sharpness from these test predictions; set tta_oof=True "
                      "to fit them on OOF predicted the same way", stacklevel=2)
    per_run = {r.run_name: pd.read_csv(Path(r.dir) / RunDir.TEST, dtype={"id": str}) if spec.plain
               else predict_fold(r.dir, spec, "test") for r in runs.itertuples()}
    tests = {model: fold_mean([per_run[r] for r in g["run_name"]], g["dir"], classes)
             for model, g in runs.groupby("model", sort=True)}
    oofs = None
    if oof and not spec.plain:
        oofs = {model: pd.concat([predict_fold(d, spec, "oof") for d in g["dir"]], ignore_index=True)
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
