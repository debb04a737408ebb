"""Test-time augmentation: ops by name on normalised image batches, and averaged predictions.

Every op maps a FloatTensor [B, 3, H, W] to one of the same shape:
    identity, hflip, vflip, rot180     any H, W
    rot90, rot270                      square images only (H == W)
    scale<factor>  e.g. scale0.9       resize by the factor (bilinear), then center-crop or
                                       reflect-pad back to H x W
Pick ops with ``get_tta(["identity", "hflip", "scale1.1"])`` and average them with ``predict_tta``.
"""
from __future__ import annotations

import re
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm


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


@torch.no_grad()
def predict_tta(model: torch.nn.Module, loader, ops, device, space: str = "prob",
                amp: bool = False, progress: bool = True) -> np.ndarray:
    """Class probabilities [N, C] (float64, rows sum to 1) averaged over TTA ops.

    ``loader`` yields batches ``(x, ...)`` (or bare x) with x a FloatTensor [B, 3, H, W], already
    normalised; ``ops`` are op names or callables (see ``get_tta``). For each op the model's logits
    go through a softmax; ops are averaged as probabilities (``space="prob"``) or as
    log-probabilities followed by a softmax (``space="logit"``). The model runs in eval mode under
    no_grad (its training flag is restored afterwards); ``amp`` enables autocast on ``device``.
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
                with torch.autocast(device_type=device.type, enabled=amp):
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
