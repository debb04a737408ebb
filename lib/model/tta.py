"""Test-time augmentation: ops by name on normalised image batches, and averaged predictions.

Every op maps a FloatTensor [B, 3, H, W] to one of the same shape:
    identity, hflip, vflip, rot180     any H, W
    rot90, rot270                      square images only (H == W)
    scale<factor>  e.g. scale0.9       resize by the factor (bilinear), then center-crop or
                                       reflect-pad back to H x W
Pick ops with ``get_tta(["identity", "hflip", "scale1.1"])``; ``lib.model.forward.predict_loader`` averages them.
A flip or rotation the runs never saw in training can hurt: ``check_tta_ops`` refuses such ops
unless a measured OOF gain (``lib.predict.inference.tta_gain``) shows they help.
"""
from __future__ import annotations

import re
from functools import partial

import torch
import torch.nn.functional as F


def _square(x: torch.Tensor, name: str) -> None:
    h, w = x.shape[-2:]
    if h != w:
        raise ValueError(f"TTA op {name!r} needs square images (H == W), got H={h}, W={w}; "
                         f"resize to a square or drop rot90/rot270 from the TTA list")


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def hflip(x: torch.Tensor) -> torch.Tensor:
    return torch.flip(x, dims=[-1])


def vflip(x: torch.Tensor) -> torch.Tensor:
    return torch.flip(x, dims=[-2])


def rot90(x: torch.Tensor) -> torch.Tensor:
    """Rotate 90 degrees counter-clockwise in the image plane."""
    _square(x, "rot90")
    return torch.rot90(x, 1, dims=(-2, -1))


def rot180(x: torch.Tensor) -> torch.Tensor:
    return torch.rot90(x, 2, dims=(-2, -1))


def rot270(x: torch.Tensor) -> torch.Tensor:
    _square(x, "rot270")
    return torch.rot90(x, 3, dims=(-2, -1))


def scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Resize [B, C, H, W] by ``factor`` (bilinear, antialiased when shrinking), then center-crop
    (factor > 1) or reflect-pad (factor < 1) back to H x W. Output keeps the input's shape."""
    h, w = x.shape[-2:]
    nh, nw = max(1, round(h * factor)), max(1, round(w * factor))
    if (nh, nw) == (h, w):
        return x
    y = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=factor < 1)
    top, left = max(0, (nh - h) // 2), max(0, (nw - w) // 2)
    y = y[..., top:top + h, left:left + w]
    ph, pw = h - y.shape[-2], w - y.shape[-1]
    if ph or pw:
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)  # left, right, top, bottom
        # reflect needs each pad smaller than the side it mirrors; tiny factors fall back
        mode = "reflect" if max(pad) < min(y.shape[-2:]) else "replicate"
        y = F.pad(y, pad, mode=mode)
    return y


TTA_OPS = {
    "identity": identity,
    "hflip": hflip,
    "vflip": vflip,
    "rot90": rot90,
    "rot180": rot180,
    "rot270": rot270,
}
_SCALE = re.compile(r"scale(\d+(?:\.\d*)?|\.\d+)")


def get_tta(names: list[str]) -> list:
    """Callables for TTA op names: the keys of ``TTA_OPS`` or ``scale<factor>`` (e.g. scale0.9)."""
    if isinstance(names, str):
        names = [names]
    ops = []
    for name in names:
        m = _SCALE.fullmatch(name)
        if name in TTA_OPS:
            ops.append(TTA_OPS[name])
        elif m and float(m.group(1)) > 0:
            op = partial(scale, factor=float(m.group(1)))
            op.__name__ = name
            ops.append(op)
        else:
            raise ValueError(f"unknown TTA op {name!r}; valid ops: {', '.join(TTA_OPS)}, "
                             f"or scale<factor> with factor > 0 (e.g. scale0.9, scale1.1)")
    if not ops:
        raise ValueError("the TTA op list is empty; use ['identity'] for plain predictions")
    return ops
