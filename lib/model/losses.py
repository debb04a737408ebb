"""Classification losses by name, for hard (class index) and soft (MixUp/CutMix) targets.

    loss = get_loss("focal", gamma=2.0)
    loss(logits, target)     # logits FloatTensor[B, C]; target LongTensor[B] or FloatTensor[B, C]

Every loss here is an ``nn.Module`` that fits fastai without a wrapper:

* ``reduction`` ('mean' | 'sum' | 'none') is an attribute read at each call, so fastai's
  ``NoneReduce`` (used by ``MixUp``/``CutMix`` and ``get_preds(with_loss=True)``) can switch it;
  'mean' is the plain mean of the B per-sample losses (also with class weights);
* ``y_int = True`` tells ``MixUp``/``CutMix`` to mix the two losses instead of the targets;
* ``activation(logits)`` gives softmax probabilities and ``decodes(probs)`` the argmax class, which
  ``Learner.get_preds`` calls, so predictions come back as probabilities rows summing to 1.

Soft targets are rows of class probabilities (they sum to 1); class indices are treated as their
one-hot rows, so the two forms give the same loss. ``label_smoothing`` (eps) follows torch's
``F.cross_entropy``: the target becomes ``(1 - eps) * y + eps / C``. Losses are computed in float32
(logits from mixed precision are cast) and stay finite, with finite gradients, for logits of +-1e4.
"""
from __future__ import annotations

import inspect
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LOSSES", "get_loss", "inverse_frequency_weights", "CrossEntropy", "FocalLoss",
           "BiTemperedLoss", "AsymmetricLoss", "SoftTargetCrossEntropy"]

_REDUCTIONS = ("mean", "sum", "none")
_EPS = 1e-12  # floor for the base of focusing weights (1 - p)**gamma: keeps their gradient finite


class _ClassificationLoss(nn.Module):
    """Shared plumbing: target checks, reduction, fastai's activation/decodes. Subclasses define
    ``per_sample(logits: FloatTensor[B, C], target) -> FloatTensor[B]``."""
    y_int = True

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.reduction not in _REDUCTIONS:
            raise ValueError(f"{type(self).__name__}.reduction is {self.reduction!r}; use one of {_REDUCTIONS}")
        logits = logits.as_subclass(torch.Tensor).float()  # drop fastai's tensor subclasses
        target = target.as_subclass(torch.Tensor)
        _check_target(logits, target, type(self).__name__)
        loss = self.per_sample(logits, target if _is_index(target) else target.float())
        if self.reduction == "mean":
            return loss.mean()
        return loss.sum() if self.reduction == "sum" else loss

    def per_sample(self, logits, target):  # pragma: no cover - abstract
        raise NotImplementedError

    def activation(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits [B, C] -> softmax probabilities [B, C] (fastai's get_preds calls this)."""
        return F.softmax(logits, dim=-1)

    def decodes(self, probs: torch.Tensor) -> torch.Tensor:
        """Probabilities or logits [B, C] -> predicted class indices [B]."""
        return probs.argmax(dim=-1)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


def _is_index(target: torch.Tensor) -> bool:
    return not target.is_floating_point()


def _check_target(logits: torch.Tensor, target: torch.Tensor, who: str) -> None:
    if logits.ndim != 2:
        raise ValueError(f"{who}: logits must be [B, C], got shape {tuple(logits.shape)}")
    if _is_index(target):
        if target.shape != logits.shape[:1]:
            raise ValueError(f"{who}: class-index target must be [B]={logits.shape[0]}, "
                             f"got shape {tuple(target.shape)}")
    elif target.shape != logits.shape:
        raise ValueError(f"{who}: soft target must match logits [B, C]={tuple(logits.shape)}, "
                         f"got shape {tuple(target.shape)}")


def _probs(target: torch.Tensor, num_classes: int, label_smoothing: float = 0.0) -> torch.Tensor:
    """Target (indices [B] or probabilities [B, C]) -> smoothed probabilities [B, C], float32."""
    y = F.one_hot(target, num_classes).float() if _is_index(target) else target
    if label_smoothing:
        y = y * (1.0 - label_smoothing) + label_smoothing / num_classes
    return y


def _check_smoothing(label_smoothing: float) -> float:
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    return float(label_smoothing)


def _class_vector(values, name: str) -> torch.Tensor | None:
    if values is None:
        return None
    v = torch.as_tensor(np.asarray(values, dtype=np.float32))
    if v.ndim != 1 or not torch.isfinite(v).all() or (v < 0).any():
        raise ValueError(f"{name} must be a 1-D sequence of C finite non-negative numbers, got {values!r}")
    return v


def inverse_frequency_weights(counts) -> torch.Tensor:
    """Class weights ~ 1 / count, scaled to mean 1. counts: array[C] of training images per class."""
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"counts must be a 1-D array with one count per class, got shape {c.shape}")
    if (c <= 0).any() or not np.isfinite(c).all():
        bad = np.flatnonzero(~(c > 0) | ~np.isfinite(c)).tolist()
        raise ValueError(f"counts must be positive and finite; classes {bad} have {c[bad].tolist()}. "
                         "Drop classes without training images or give them a count of at least 1.")
    w = 1.0 / c
    return torch.tensor(w / w.mean(), dtype=torch.float32)


class CrossEntropy(_ClassificationLoss):
    """Cross-entropy via ``F.cross_entropy``, with label smoothing and optional class weights.

    weight: FloatTensor[C] or sequence (e.g. ``inverse_frequency_weights(counts)``); the per-sample
    loss is ``-sum_c weight_c * y_c * log p_c`` and 'mean' averages it over the batch (torch's own
    weighted 'mean' for index targets would divide by the summed weights instead).
    """

    def __init__(self, label_smoothing: float = 0.0, weight=None, reduction: str = "mean"):
        super().__init__(reduction)
        self.label_smoothing = _check_smoothing(label_smoothing)
        self.register_buffer("weight", _class_vector(weight, "weight"))

    def per_sample(self, logits, target):
        w = None if self.weight is None else self.weight.to(logits.device)
        if w is not None and w.numel() != logits.shape[1]:
            raise ValueError(f"weight has {w.numel()} entries but logits have C={logits.shape[1]} classes")
        return F.cross_entropy(logits, target, weight=w, reduction="none", label_smoothing=self.label_smoothing)

    def extra_repr(self):
        return f"label_smoothing={self.label_smoothing}, weighted={self.weight is not None}, " + super().extra_repr()


class SoftTargetCrossEntropy(_ClassificationLoss):
    """Cross-entropy ``-sum_c y_c log p_c`` against soft targets; class indices become one-hot rows."""

    def per_sample(self, logits, target):
        return F.cross_entropy(logits, _probs(target, logits.shape[1]), reduction="none")


class FocalLoss(_ClassificationLoss):
    """Softmax focal loss (Lin et al. 2017) extended to soft targets:
    ``-sum_c alpha_c * y_c * (1 - p_c)**gamma * log p_c`` with y the (smoothed) target row.

    gamma: focusing parameter >= 0 (0 gives cross-entropy). alpha: None, a float that scales the
    loss, or C per-class weights.
    """

    def __init__(self, gamma: float = 2.0, alpha: float | Sequence[float] | None = None,
                 label_smoothing: float = 0.0, reduction: str = "mean"):
        super().__init__(reduction)
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.label_smoothing = _check_smoothing(label_smoothing)
        self.register_buffer("alpha", None if alpha is None else _class_vector(np.atleast_1d(alpha), "alpha"))

    def per_sample(self, logits, target):
        logp = F.log_softmax(logits, dim=-1)
        y = _probs(target, logits.shape[1], self.label_smoothing)
        one_minus_p = (-torch.expm1(logp)).clamp_min(_EPS)  # 1 - p, accurate when p ~ 1
        loss = -(y * one_minus_p.pow(self.gamma) * logp)
        if self.alpha is not None:
            loss = loss * self.alpha.to(logits.device)  # [1] broadcasts, [C] weights classes
        return loss.sum(dim=-1)

    def extra_repr(self):
        return f"gamma={self.gamma}, label_smoothing={self.label_smoothing}, " + super().extra_repr()


def _log_t(u: torch.Tensor, t: float) -> torch.Tensor:
    return u.log() if t == 1.0 else (u.pow(1.0 - t) - 1.0) / (1.0 - t)


def _exp_t(u: torch.Tensor, t: float) -> torch.Tensor:
    return u.exp() if t == 1.0 else (1.0 + (1.0 - t) * u).relu().pow(1.0 / (1.0 - t))


def tempered_softmax(logits: torch.Tensor, t: float, num_iters: int = 5) -> torch.Tensor:
    """Tempered softmax [B, C] for t >= 1 with the fixed-point normalisation of Amid et al. 2019."""
    if t == 1.0:
        return F.softmax(logits, dim=-1)
    mu = logits.max(dim=-1, keepdim=True).values
    a0 = logits - mu
    a = a0
    for _ in range(num_iters):
        partition = _exp_t(a, t).sum(dim=-1, keepdim=True)
        a = a0 * partition.pow(1.0 - t)
    partition = _exp_t(a, t).sum(dim=-1, keepdim=True)
    norm = -_log_t(1.0 / partition, t) + mu
    return _exp_t(logits - norm, t)


class BiTemperedLoss(_ClassificationLoss):
    """Bi-tempered logistic loss (Amid, Warmuth, Anil, Koren, NeurIPS 2019).

    t1 in (0, 1] bounds the loss (t1 < 1 resists label noise); t2 >= 1 gives the tempered softmax a
    heavy tail, normalised by ``num_iters`` fixed-point iterations (the paper's method for t2 > 1).
    Per sample: ``sum_c [y log_t1(y) - y log_t1(p) - y**(2-t1)/(2-t1) + p**(2-t1)/(2-t1)]`` with
    p = tempered_softmax(logits, t2); with t1 = t2 = 1 this is cross-entropy minus the target's
    entropy (plain cross-entropy for hard targets). Label smoothing uses torch's convention
    (eps / C to every class), unlike the reference code (eps / (C - 1) to the others).
    """

    def __init__(self, t1: float = 0.8, t2: float = 1.2, label_smoothing: float = 0.0, num_iters: int = 5,
                 reduction: str = "mean"):
        super().__init__(reduction)
        if not 0.0 < t1 <= 1.0:
            raise ValueError(f"bi_tempered t1 must be in (0, 1], got {t1}")
        if t2 < 1.0:
            raise ValueError(f"bi_tempered t2 must be >= 1 (the fixed-point normalisation needs it), got {t2}")
        if num_iters < 1:
            raise ValueError(f"bi_tempered num_iters must be >= 1, got {num_iters}")
        self.t1, self.t2, self.num_iters = float(t1), float(t2), int(num_iters)
        self.label_smoothing = _check_smoothing(label_smoothing)

    def per_sample(self, logits, target):
        y = _probs(target, logits.shape[1], self.label_smoothing)
        t1 = self.t1
        if self.t2 == 1.0 and t1 == 1.0:
            p, log_t1_p = F.softmax(logits, dim=-1), F.log_softmax(logits, dim=-1)
        else:
            p = tempered_softmax(logits, self.t2, self.num_iters)
            # p can underflow to 0 for extreme logits; the floor keeps log_t1 and its gradient finite
            log_t1_p = _log_t(p.clamp_min(torch.finfo(p.dtype).tiny), t1)
        y_log_y = y * _log_t(y + 1e-10, t1)
        loss = y_log_y - y * log_t1_p - y.pow(2.0 - t1) / (2.0 - t1) + p.pow(2.0 - t1) / (2.0 - t1)
        return loss.sum(dim=-1)

    def extra_repr(self):
        return (f"t1={self.t1}, t2={self.t2}, label_smoothing={self.label_smoothing}, num_iters={self.num_iters}, "
                + super().extra_repr())


class AsymmetricLoss(_ClassificationLoss):
    """Asymmetric loss (ASL, Ridnik et al. ICCV 2021), one-vs-all variant: each class is a sigmoid
    binary problem with the target row y as its label, so gamma_neg and the probability margin
    ``clip`` act on every negative class (in the softmax "single-label" variant they would only act
    through label smoothing). Per sample, with p = sigmoid(logits) and p_m = max(p - clip, 0):
    ``-sum_c [y_c (1 - p_c)**gamma_pos log p_c + (1 - y_c) p_m**gamma_neg log(1 - p_m)]``.
    ``activation`` still returns softmax probabilities (same argmax as the sigmoids) so predictions
    are rows summing to 1 like the other losses.
    """

    def __init__(self, gamma_pos: float = 0.0, gamma_neg: float = 4.0, clip: float = 0.05,
                 label_smoothing: float = 0.0, reduction: str = "mean"):
        super().__init__(reduction)
        if gamma_pos < 0 or gamma_neg < 0:
            raise ValueError(f"asymmetric gamma_pos/gamma_neg must be >= 0, got {gamma_pos}, {gamma_neg}")
        if not 0.0 <= clip < 1.0:
            raise ValueError(f"asymmetric clip must be in [0, 1), got {clip}")
        self.gamma_pos, self.gamma_neg, self.clip = float(gamma_pos), float(gamma_neg), float(clip)
        self.label_smoothing = _check_smoothing(label_smoothing)

    def per_sample(self, logits, target):
        y = _probs(target, logits.shape[1], self.label_smoothing)
        p = torch.sigmoid(logits)
        log_p = F.logsigmoid(logits)
        if self.clip > 0:
            p_neg = (p - self.clip).clamp_min(0.0)
            log_1m_p = torch.log1p(-p_neg)  # 1 - p_neg >= clip > 0
        else:
            p_neg, log_1m_p = p, F.logsigmoid(-logits)
        w_pos = torch.sigmoid(-logits).clamp_min(_EPS).pow(self.gamma_pos)  # (1 - p)**gamma_pos
        w_neg = p_neg.clamp_min(_EPS).pow(self.gamma_neg)
        loss = -(y * w_pos * log_p + (1.0 - y) * w_neg * log_1m_p)
        return loss.sum(dim=-1)

    def extra_repr(self):
        return (f"gamma_pos={self.gamma_pos}, gamma_neg={self.gamma_neg}, clip={self.clip}, "
                f"label_smoothing={self.label_smoothing}, " + super().extra_repr())


LOSSES: dict[str, type[_ClassificationLoss]] = {
    "ce": CrossEntropy,
    "focal": FocalLoss,
    "bi_tempered": BiTemperedLoss,
    "asymmetric": AsymmetricLoss,
    "soft_ce": SoftTargetCrossEntropy,
}


def get_loss(name: str, **kwargs) -> nn.Module:
    """Build the loss registered as ``name`` (see ``LOSSES``) with its keyword arguments."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    cls = LOSSES[name]
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as e:
        params = list(inspect.signature(cls).parameters)
        raise TypeError(f"loss {name!r} ({cls.__name__}) got bad arguments {sorted(kwargs)}: {e}; "
                        f"it takes {params}") from None
    return cls(**kwargs)
