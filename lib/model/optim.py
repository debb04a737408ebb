"""The optimizer by name, its parameter groups (weight decay, layer-wise learning-rate decay), the
parameters a fine-tune freezes first, and model compilation.

    groups = param_groups(model, weight_decay=0.05, layer_decay=0.75)   # [{"params", "weight_decay", "lr_scale"}]
    opt_func = partial(ScaledLrOptim, opt=optimizer_factory("adamw", {}), scales=lr_scales(groups))
    frozen = body_parameters(model)                                     # all but the head and the norm layers
    compile_model(model)                                                # torch.compile, caches on disk

The optimizer is timm's ``create_optimizer_v2`` by name (``lib.core.choices.OPT_ARGS``: adamw is torch's
multi-tensor AdamW, sgd timm's SGD with nesterov momentum 0.9, lion, lamb, ...), over the groups below,
wrapped for fastai by ``ScaledLrOptim`` (fastai's ``OptimWrapper``).

Layer-wise decay (fine-tuning ViT, EVA-02, ConvNeXt): the head trains at the scheduled lr, each
block below it at ``layer_decay`` times the one above (timm's ``param_groups_layer_decay`` over the
model's ``group_matcher``), so the early layers of a pretrained network move least. The scheduler
(``lib.train.stages.LrSchedule``) sets one lr for all groups; ``ScaledLrOptim`` multiplies it per group.
"""
from __future__ import annotations

import numpy as np
import torch
from fastai.optimizer import OptimWrapper
from timm.optim import create_optimizer_v2, param_groups_layer_decay, param_groups_weight_decay

NORMS = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.RMSNorm,
         torch.nn.modules.instancenorm._InstanceNorm)  # layers that train while the body is frozen (fastai's train_bn)


def optimizer_factory(name: str, opt_args: dict):
    """``opt(groups, lr=...) -> torch.optim.Optimizer``: timm's optimizer ``name`` with ``opt_args``
    (lists such as betas as tuples), multi-tensor (foreach). Weight decay is set per group afterwards."""
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in opt_args.items()}

    def make(params, lr):
        return create_optimizer_v2(params, opt=name, lr=lr, foreach=True, **args)
    return make


def body_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters a fine-tune's ``freeze_epochs`` hold still: all but the head's (timm's
    ``get_classifier()`` and the ``global_pool``, e.g. GeM's p) and the norm layers' (``NORMS``: fastai's
    ``train_bn``, so their scales and shifts adapt to the new data with the head). A model without
    ``get_classifier`` has no head to tell apart: that is an error, by name."""
    if not hasattr(model, "get_classifier"):
        raise ValueError(f"{type(model).__name__} has no get_classifier: its head cannot be told from its body "
                         "for freeze_epochs; set freeze_epochs 0")
    head = [model.get_classifier(), getattr(model, "global_pool", None)]
    keep = {id(p) for m in head if isinstance(m, torch.nn.Module) for p in m.parameters()}
    keep |= {id(p) for m in model.modules() if isinstance(m, NORMS) for p in m.parameters(recurse=False)}
    return [p for p in model.parameters() if id(p) not in keep]


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
