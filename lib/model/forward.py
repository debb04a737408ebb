"""A model's class probabilities over a loader, averaged over test-time augmentation ops.

    probs = predict_loader(model, loader, ["identity", "hflip"], device)     # [N, C], float64
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from lib.model.tta import get_tta


@torch.no_grad()
def predict_loader(model: torch.nn.Module, loader, ops, device, space: str = "prob",
                   dtype: torch.dtype | None = None, progress: bool = True) -> np.ndarray:
    """Class probabilities [N, C] (float64, rows sum to 1) averaged over TTA ops.

    ``loader`` yields batches ``(x, ...)`` (or bare x) with x a FloatTensor [B, 3, H, W], already
    normalised; ``ops`` are op names or callables (see ``get_tta``). For each op the model's logits
    go through a softmax; ops are averaged as probabilities (``space="prob"``) or as
    log-probabilities followed by a softmax (``space="logit"``). The model runs in eval mode under
    no_grad (its training flag is restored afterwards), under autocast to ``dtype`` (the run's
    training dtype, ``lib.core.device.amp_dtype``) when given.
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
