"""timm backbones by name, with local weight files for offline kernels and GeM pooling.

    model, data_cfg = create_backbone("convnext_tiny", num_classes=5, pretrained="/kaggle/input/w/model.safetensors")

``pretrained`` is ``"hub"`` (timm downloads the weights), ``"none"`` (random init) or the path of a
timm-format state dict (``.safetensors``, ``.pth``, ``.pt`` or ``.bin``, e.g. a copy of the timm
Hugging Face repo's ``model.safetensors`` uploaded as a Kaggle dataset). Local files go through
timm's own loader (``pretrained_cfg_overlay=dict(file=...)``): safetensors, or ``torch.load`` with
``weights_only=True`` (never unpickling code); the classifier is re-made when the file's number of
classes differs from ``num_classes`` and the first conv is adapted when ``in_chans != 3``.

A trained model (``save_weights``) is restored by building it with the same arguments and
``pretrained="none"``, then ``load_weights``.

Besides timm's own models, ``airnet_tiny`` and ``airnet_small`` (``lib.model.smallnet``: networks for 28-32 px
images, no downsampling stem) are registered with timm when this module is imported.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path

import safetensors.torch
import timm
import torch
from timm.layers import SelectAdaptivePool2d
from timm.models import get_pretrained_cfg, load_state_dict
from torch import nn

import lib.model.smallnet  # noqa: F401  (registers the airnet_* models with timm before any create_model)
from lib.core.io import atomic_path

__all__ = ["GeM", "create_backbone", "save_weights", "load_weights"]

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


class GeM(nn.Module):
    """Generalised-mean pooling (Radenovic et al. 2018) with a learnable exponent p.

    x: [B, C, H, W] -> [B, C, 1, 1], ``(mean_hw clamp(x, eps)**p)**(1/p)``; p = 1 is average pooling
    and large p approaches max pooling. Computed in float32 so fp16 activations do not underflow.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.full((1,), float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.float()
        y = x.float().clamp_min(self.eps).pow(p).mean(dim=(-2, -1), keepdim=True).pow(1.0 / p)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.4f}, eps={self.eps}"


def create_backbone(name: str, num_classes: int, pretrained: str | os.PathLike = "none", pool: str = "avg",
                    drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                    in_chans: int = 3, model_kwargs: dict | None = None) -> tuple[nn.Module, dict]:
    """A timm model ``name`` with a ``num_classes`` head, and its data config.

    pool: timm's global pool name ('avg', 'max', 'avgmax', 'catavgmax'; 'token'/'avg' for ViTs) or
    'gem' (``GeM`` inside the model's ``SelectAdaptivePool2d``, for CNNs such as resnet, convnext,
    efficientnet). drop_rate: dropout before the classifier; drop_path_rate: stochastic depth.
    model_kwargs: further arguments of the timm model's constructor, e.g. ``{"channels": [64, 128, 256,
    256]}`` for a wider ``test_resnet``; a name the model does not take is a clear error.
    Returns ``(model, data_cfg)``; data_cfg has input_size (C, H, W) in pixels, mean and std (one per
    input channel, for pixel values scaled to [0, 1]), interpolation, crop_pct and crop_mode.
    """
    if not isinstance(pretrained, (str, os.PathLike)):
        raise ValueError(f"pretrained must be 'hub', 'none' or the path of a weights file, got {pretrained!r}")
    head_keys = _check_name(name)
    kwargs = dict(num_classes=num_classes, drop_rate=drop_rate, drop_path_rate=drop_path_rate, in_chans=in_chans,
                  global_pool="avg" if pool == "gem" else pool, **(model_kwargs or {}))
    if str(pretrained) in ("none", "hub"):
        model = _timm_create(name, pretrained=str(pretrained) == "hub", **kwargs)
    else:
        model = _create_from_file(name, Path(pretrained), head_keys, kwargs)
    if pool == "gem":
        _use_gem(model, name)
    data_cfg = timm.data.resolve_model_data_config(model)
    if len(data_cfg["mean"]) != in_chans:  # timm keeps the RGB statistics; average them per channel
        mean, std = (sum(data_cfg[k]) / len(data_cfg[k]) for k in ("mean", "std"))
        data_cfg.update(mean=(mean,) * in_chans, std=(std,) * in_chans,
                        input_size=(in_chans, *data_cfg["input_size"][1:]))
    return model, data_cfg


def _timm_create(name: str, **kwargs) -> nn.Module:
    try:
        return timm.create_model(name, **kwargs)
    except TypeError as e:  # a model_kwargs name the constructor does not take
        raise ValueError(f"timm cannot build {name!r} with these arguments ({e}); check model_kwargs "
                         "against the model's constructor in timm") from None
    except AssertionError as e:  # timm validates pool names and head options with asserts
        raise ValueError(f"timm cannot build {name!r} with global_pool={kwargs['global_pool']!r}: {e}") from None


def _check_name(name: str) -> set[str]:
    """Raise a clear error for an unknown model name or tag; return the classifier's state-dict keys."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        raise ValueError(f"unknown timm model {name!r}; close names: {close or 'none'}. "
                         f"List models with timm.list_models('*pattern*').")
    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError as e:  # valid architecture, unknown pretrained tag
        arch = name.split(".")[0]
        raise ValueError(f"{e} Tags for {arch}: {timm.list_pretrained(arch + '.*')}") from None
    classifier = (cfg.classifier if cfg else None) or ()
    classifier = (classifier,) if isinstance(classifier, str) else classifier
    return {f"{c}.{p}" for c in classifier for p in ("weight", "bias")}


def _create_from_file(name: str, path: Path, head_keys: set[str], kwargs: dict) -> nn.Module:
    hint = ("(to restore a model saved with save_weights, build it with the same arguments and "
            "pretrained='none', then call load_weights)")
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} for model {name!r} does not exist; give the path of a "
                                f"{'/'.join(WEIGHT_SUFFIXES)} state dict, pretrained='hub' to download or 'none'")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise ValueError(f"weights file {str(path)!r} for model {name!r} should end in one of {WEIGHT_SUFFIXES}")
    shapes = {k: tuple(v.shape) for k, v in _read_state_dict(path, name).items()}
    # Tell timm how many classes the file's head has: it keeps a matching head and drops the rest.
    head_rows = [shapes[k][0] for k in sorted(head_keys) if k in shapes and k.endswith(".weight")]
    overlay = dict(file=str(path), num_classes=head_rows[0] if head_rows else 0)
    try:
        model = _timm_create(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except RuntimeError as e:  # size mismatch or missing/unexpected keys under strict loading
        raise ValueError(f"weights file {str(path)!r} does not fit model {name!r}: {e}\n{hint}") from None
    # With a re-made head timm loads non-strictly: check that every backbone tensor came from the file.
    model_keys = set(model.state_dict())
    missing = sorted(model_keys - shapes.keys() - head_keys)
    unexpected = sorted(shapes.keys() - model_keys - head_keys)
    if missing or unexpected:
        raise ValueError(f"weights file {str(path)!r} does not fit model {name!r}: {len(missing)} model tensors are "
                         f"not in the file (e.g. {missing[:3]}) and {len(unexpected)} file tensors are not in the "
                         f"model (e.g. {unexpected[:3]}). Is it another architecture's state dict? Pass the model "
                         f"name it was saved from, or pretrained='none' {hint}")
    return model


def _read_state_dict(path: Path, name: str) -> dict[str, torch.Tensor]:
    """timm's reader: safetensors, or torch.load(weights_only=True); unwraps 'state_dict'/'model'/EMA."""
    try:
        sd = load_state_dict(str(path), weights_only=True)
    except Exception as e:  # corrupt file, pickled objects refused by weights_only, ...
        raise ValueError(f"cannot read weights file {str(path)!r} for model {name!r} as a state dict "
                         f"({type(e).__name__}: {e}). Save a plain state dict (safetensors or "
                         f"torch.save(model.state_dict())); whole pickled models are refused.") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"weights file {str(path)!r} for model {name!r} is not a state dict of tensors")
    return sd


def _use_gem(model: nn.Module, name: str) -> None:
    """Swap the head's average pooling for GeM, keeping forward_features/forward_head as they are."""
    for owner in (model, getattr(model, "head", None)):
        pool = getattr(owner, "global_pool", None)
        if isinstance(pool, SelectAdaptivePool2d) and isinstance(pool.pool, nn.AdaptiveAvgPool2d):
            pool.pool, pool.pool_type = GeM(), "gem"
            return
    raise ValueError(f"pool='gem' needs a model whose head pools NCHW feature maps with timm's "
                     f"SelectAdaptivePool2d (CNNs such as resnet, convnext, efficientnet); {name!r} "
                     f"({type(model).__name__}) does not. Use one of timm's pool names for it, e.g. pool='avg'.")


def save_weights(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write ``model``'s state dict to a ``.safetensors`` file, atomically. Returns the path."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"save_weights writes safetensors; name the file '*.safetensors', got {str(path)!r}")
    with atomic_path(path) as tmp:
        safetensors.torch.save_model(model, str(tmp))  # handles tied tensors, makes them contiguous
    return path


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a state dict file (safetensors, or torch.load with weights_only=True) into ``model``, strictly.

    Every tensor must match by name and shape; the model is changed in place and returned.
    """
    path = Path(path)
    what = type(model).__name__
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} (for a {what}) does not exist")
    try:
        if path.suffix == ".safetensors":
            safetensors.torch.load_model(model, str(path), strict=True)
        else:
            model.load_state_dict(_read_state_dict(path, what), strict=True)
    except RuntimeError as e:
        raise ValueError(f"weights file {str(path)!r} does not fit this {what}: {e}\nBuild the model with the same "
                         f"create_backbone arguments (name, num_classes, pool, in_chans) it was saved with.") from None
    return model
