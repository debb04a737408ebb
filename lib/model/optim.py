"""The optimizer's parameter groups (weight decay, layer-wise learning-rate decay) and model compilation.

    groups = param_groups(model, weight_decay=0.05, layer_decay=0.75)   # [{"params", "weight_decay", "lr_scale"}]
    opt_func = partial(ScaledLrOptim, opt=partial(torch.optim.AdamW, foreach=True), scales=lr_scales(groups))
    compile_model(model)                                                # torch.compile, caches on disk

Layer-wise decay (fine-tuning ViT, EVA-02, ConvNeXt): the head trains at the scheduled lr, each
block below it at ``layer_decay`` times the one above (timm's ``param_groups_layer_decay`` over the
model's ``group_matcher``), so the early layers of a pretrained network move least. The scheduler
(``lib.train.stages.LrSchedule``) sets one lr for all groups; ``ScaledLrOptim`` multiplies it per group.
"""
from __future__ import annotations

import numpy as np
import torch
from fastai.optimizer import OptimWrapper
from timm.optim import param_groups_layer_decay, param_groups_weight_decay


def param_groups(model: torch.nn.Module, weight_decay: float, layer_decay: float | None = None) -> list[dict]:
    """Parameter groups: no weight decay on norms, biases and other 1-d tensors (timm's split); with
    ``layer_decay``, also one group per block depth with ``lr_scale`` = layer_decay ** (blocks above).
    A model without timm's ``group_matcher`` cannot be split by depth: that is an error, by name."""
    if layer_decay is None:
        return [{**g, "lr_scale": 1.0} for g in param_groups_weight_decay(model, weight_decay)]
    if not hasattr(model, "group_matcher"):
        raise ValueError(f"{type(model).__name__} has no group_matcher: timm cannot tell its blocks apart for "
                         "layer_decay; set layer_decay None")
    return param_groups_layer_decay(model, weight_decay, layer_decay=layer_decay)


def lr_scales(groups: list[dict]) -> np.ndarray:
    """[G]: each group's multiplier of the scheduled lr (1.0 without layer decay)."""
    return np.array([g.get("lr_scale", 1.0) for g in groups], dtype=np.float64)


class ScaledLrOptim(OptimWrapper):
    """fastai's wrapper of a torch optimizer whose group g gets lr x ``scales[g]`` whenever fastai sets
    the lr (one-cycle, flat-cos, lr_find); other hyper-parameters pass through."""

    def __init__(self, params, opt, scales, **kwargs):
        super().__init__(params, opt, **kwargs)
        self.scales = [float(x) for x in scales]
        if len(self.scales) != len(self.opt.param_groups):
            raise ValueError(f"{len(self.scales)} lr scales for {len(self.opt.param_groups)} parameter groups")

    def _set_hyper(self, k, v):
        if k == "lr":
            v = [float(lr) * s for lr, s in zip(v, self.scales)]  # plain floats: state.pt loads with weights_only
        super()._set_hyper(k, v)


def compile_model(model: torch.nn.Module) -> torch.nn.Module:
    """``model.compile()`` (in place: its state_dict keys stay those of the plain model, so weights,
    EMA copies and checkpoints are unchanged). Inductor's compiled-graph caches go to
    ``$TORCHINDUCTOR_CACHE_DIR`` as the process was started with (without it, torch's default in the
    temp dir); this function does not set it. The grid starts each run with it set to
    ``<repo>/.cache/torchinductor`` (``lib.ops.jobs.run_env``): shared by every run of a grid on this
    machine and kept across reboots, so only the first fold pays the compile. For the same cache in an
    interactive notebook, start Jupyter with it set: ``make lab`` does, or
    ``TORCHINDUCTOR_CACHE_DIR=$PWD/.cache/torchinductor .venv/bin/jupyter lab``."""
    model.compile()
    return model
