"""The names a recipe picks from, in one place at the bottom of the house.

``TrainConfig`` checks its values against these without importing the floors that implement them
(albumentations, torch losses, fastai schedules): making a recipe imports neither torch nor
albumentations. Each registry above checks that it implements exactly these names
(tests/core/test_choices.py): ``lib.data.augment.AUGMENTATIONS``, ``lib.model.losses.LOSSES`` (and the
keyword arguments each loss takes), ``lib.model.tta.TTA_OPS``, ``lib.train.stages.SCHEDULES``,
``lib.train.sampler.SAMPLERS``; timm's optimizer registry holds every ``OPT_ARGS`` name and argument.
"""
from __future__ import annotations

AUGMENTATIONS = ("none", "light", "medium", "heavy", "doc_noise", "randaugment", "trivialaugment", "autoaugment")
LOSS_ARGS = {  # loss name -> the keyword arguments (loss_args) it takes
    "ce": ("label_smoothing", "weight", "reduction"),
    "focal": ("gamma", "alpha", "label_smoothing", "reduction"),
    "bi_tempered": ("t1", "t2", "label_smoothing", "num_iters", "reduction"),
    "asymmetric": ("gamma_pos", "gamma_neg", "clip", "label_smoothing", "reduction"),
    "soft_ce": ("reduction",),
}
TTA_OPS = ("identity", "hflip", "vflip", "rot90", "rot180", "rot270")  # and scale<factor>, e.g. scale0.9
OPT_ARGS = {  # timm optimizer name (timm.optim.create_optimizer_v2) -> the keyword arguments (opt_args) it takes
    "adamw": ("betas", "eps", "amsgrad"),                      # torch's AdamW
    "sgd": ("momentum", "dampening", "nesterov"),              # timm's sgd: momentum 0.9, nesterov
    "momentum": ("momentum", "dampening"),                     # SGD with momentum 0.9, not nesterov
    "lion": ("betas", "caution"),                              # sign updates: lr ~3-10x lower, decay higher
    "lamb": ("betas", "eps", "max_grad_norm", "trust_clip", "always_adapt", "decoupled_decay"),
    "nadamw": ("betas", "eps", "caution"),
    "radam": ("betas", "eps", "decoupled_weight_decay"),
    "adopt": ("betas", "eps", "clip_exp", "decoupled", "caution"),
}
SCHEDULES = ("onecycle", "flat_cos", "plateau", "cosine_restarts")
SAMPLERS = ("shuffle", "balanced", "sqrt")  # each image once per epoch | classes drawn alike | by sqrt of their counts
PRECISIONS = ("auto", "fp32", "bf16")
TRACKERS = ("none", "mlflow", "wandb")
POOLS = ("avg", "max", "avgmax", "catavgmax", "token", "gem")
SCAN_ARGS = ("labels_csv", "id_col", "label_col", "path_col")
BEST_EPOCHS = ("last", "monitor")
RESIZES = ("squash", "pad")  # how an image becomes a square (lib.data.dataset.resize_square)
GREATER_IS_BETTER = {"log_loss": False, "valid_loss": False, "accuracy": True, "f1_macro": True, "top5": True}
MONITORS = {k: GREATER_IS_BETTER[k] for k in ("log_loss", "valid_loss", "accuracy", "f1_macro")}  # best epoch by


def direction(metric: str) -> int:
    """+1 where a higher ``metric`` is better (accuracy, f1_macro, top5), -1 where lower is (the losses):
    ``max(rows, key=lambda r: direction(m) * r[m])`` is the best row."""
    if metric not in GREATER_IS_BETTER:
        raise ValueError(f"metric {metric!r}: choose one of {sorted(GREATER_IS_BETTER)}")
    return 1 if GREATER_IS_BETTER[metric] else -1
