"""Trained runs as ONNX files, to serve them or predict where PyTorch is not installed.

    export_onnx("runs/convnext_tiny_f0")          # -> runs/convnext_tiny_f0/model.onnx (+ model.onnx.json)
    export_blend("runs", "export")                # every run of 04's blend, and blend.json
    check_onnx("runs/convnext_tiny_f0")           # largest |onnxruntime - PyTorch| probability

A file takes ``image``: float32 [B, 3, S, S] (B free; RGB scaled to [0, 1], minus ``mean``, over
``std``, squashed to S x S as in training) and gives ``probs``: float32 [B, C], the softmax of the
model's logits in the class order of ``classes``. Those facts are written beside it in
``model.onnx.json``. ``check_onnx`` compares onnxruntime with PyTorch on the competition's images.
Their command line is ``python -m lib.ops.export``.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lib.core.io import atomic_path, read_json, write_json
from lib.core.paths import resolve
from lib.core.rundir import RunDir
from lib.data.competition import open_competition
from lib.data.dataset import image_dataset
from lib.model.factory import load_trained
from lib.predict.submission import load_blend


def _class_table(run_dir: Path) -> dict:
    if (run_dir / RunDir.CLASSES).exists():
        return read_json(run_dir / RunDir.CLASSES)
    return {"classes": list(pd.read_csv(run_dir / RunDir.TEST, nrows=0).columns[1:])}  # runs made before it


def _probs_model(run_dir: Path) -> tuple[torch.nn.Module, dict, object]:
    """(model with a softmax head in eval mode, its data config, the recipe) of a finished run."""
    model, cfg, data_cfg = load_trained(run_dir, len(_class_table(run_dir)["classes"]))
    return torch.nn.Sequential(model, torch.nn.Softmax(dim=1)).eval(), data_cfg, cfg


def export_onnx(run_dir, out=None, opset: int = 18) -> Path:
    """Write a finished run's best weights as ONNX (``out``, default ``<run>/model.onnx``) with a
    free batch axis, and ``<out>.json`` (size, mean, std, classes). Returns the ONNX path."""
    run_dir = resolve(run_dir)
    if not (run_dir / RunDir.WEIGHTS).exists():
        raise FileNotFoundError(f"{run_dir}/model.safetensors is missing: export a run 02_train finished")
    model, data_cfg, cfg = _probs_model(run_dir)
    out = Path(out) if out else run_dir / "model.onnx"
    example = torch.zeros(2, 3, cfg.img_size, cfg.img_size)
    with atomic_path(out) as tmp:
        torch.onnx.export(model, (example,), str(tmp), input_names=["image"], output_names=["probs"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=opset, dynamo=True,
                          verbose=False, report=False, external_data=False)  # one file (models < 2 GB)
    write_json(out.with_suffix(".onnx.json"), {"run": run_dir.name, "backbone": cfg.backbone, "size": cfg.img_size,
                                               "mean": list(data_cfg["mean"]), "std": list(data_cfg["std"]),
                                               **_class_table(run_dir)})
    return out


def check_onnx(run_dir, onnx_path=None, n: int = 64, batch_size: int = 16) -> float:
    """Largest absolute difference of class probabilities between onnxruntime (CPU) and PyTorch on
    up to ``n`` of the competition's test images (its training images when it has no test set)."""
    import onnxruntime as ort

    run_dir = resolve(run_dir)
    onnx_path = Path(onnx_path) if onnx_path else run_dir / "model.onnx"
    model, data_cfg, cfg = _probs_model(run_dir)
    comp = open_competition(cfg.data_dir)
    split, table = ("test", comp.test) if len(comp.test) else ("train", comp.train)
    ds = image_dataset(cfg.replace(progress=False), comp, split, table.head(n), "none", data_cfg, targets=False)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for start in range(0, len(ds), batch_size):
        x = torch.stack([ds[i][0] for i in range(start, min(start + batch_size, len(ds)))])
        with torch.no_grad():
            want = model(x).numpy()
        got = session.run(None, {"image": x.numpy()})[0]
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


def export_blend(runs_dir="runs", out="export") -> Path:
    """One ONNX file per run of 04's blend (``<out>/<run>.onnx`` + json) and the blend file, which
    says how to combine them (each model's runs averaged, then weights and temperature)."""
    runs_dir, out = resolve(runs_dir), resolve(out)
    plan = load_blend(runs_dir / "ensemble" / "blend.json")
    out.mkdir(parents=True, exist_ok=True)
    for names in plan["models"].values():
        for r in names:
            export_onnx(runs_dir / r, out / f"{r}.onnx")
    shutil.copy2(runs_dir / "ensemble" / "blend.json", out / "blend.json")
    return out
