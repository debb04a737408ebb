"""A recipe's model, checked against its input size.

    model, data_cfg = build_model(cfg, num_classes)     # timm backbone (or airnet), head, pooling, weights
    model, cfg, data_cfg = load_trained("runs/convnext_tiny_f0", num_classes)   # a run's model, its weights

Training (``lib.train``), re-prediction (``lib.predict``) and ONNX export (``lib.ops.onnx_export``) all build
through here, so a run is predicted and exported with exactly the model it trained.
"""
from __future__ import annotations

import torch

from lib.core.config import TrainConfig
from lib.core.rundir import RunDir, load_config
from lib.model.backbones import create_backbone, load_weights


def build_model(cfg: TrainConfig, num_classes: int, pretrained: str | None = None) -> tuple[torch.nn.Module, dict]:
    """The recipe's timm model with a ``num_classes`` head, and its data config (mean, std, ...).

    ``pretrained`` overrides the recipe's (re-prediction builds with "none", then loads the run's
    weights). A size the architecture cannot take fails here, by name."""
    model, data_cfg = create_backbone(cfg.backbone, num_classes, pretrained=pretrained or cfg.pretrained,
                                      pool=cfg.pool, drop_rate=cfg.drop_rate, drop_path_rate=cfg.drop_path_rate,
                                      model_kwargs=cfg.model_kwargs)
    check_input_size(model, cfg.backbone, cfg.img_size)
    if cfg.grad_checkpointing:
        if not hasattr(model, "set_grad_checkpointing"):
            raise ValueError(f"{cfg.backbone} has no gradient checkpointing in timm; set grad_checkpointing False")
        model.set_grad_checkpointing(True)
    return model, data_cfg


def load_trained(run_dir, num_classes: int) -> tuple[torch.nn.Module, TrainConfig, dict]:
    """(model, recipe, data config) of a trained run: the model its ``params.yaml`` builds (with
    ``num_classes`` outputs, no pretrained download) holding its kept weights ``model.safetensors``,
    in training mode on the CPU as ``build_model`` leaves it; the recipe as ``lib.core.rundir.load_config``
    reads it; the data config (mean, std, ...) its images were normalised with."""
    cfg = load_config(run_dir)
    model, data_cfg = build_model(cfg, num_classes, pretrained="none")
    load_weights(model, RunDir(run_dir).weights)
    return model, cfg, data_cfg


def check_input_size(model, backbone: str, img_size: int) -> None:
    """One forward pass on a blank image, so a size the architecture cannot take fails here, by name."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, img_size, img_size))
    except RuntimeError as e:
        raise ValueError(f"img_size {img_size} does not fit {backbone} ({str(e).splitlines()[0][:160]}); "
                         "try a larger img_size or a model made for small inputs") from e
    finally:
        model.train(was)
