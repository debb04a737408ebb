"""Which values and mixes of the weight-averaging, stages and plateau settings make sense, as
readable lines: ``TrainConfig.problems`` adds them to its own. Kept apart from ``lib.averaging`` and
``lib.stages`` (fastai callbacks), so that checking a recipe imports no fastai.
"""
from __future__ import annotations


def averaging_problems(cfg) -> list[str]:
    """What is wrong with ``swa_epochs``, ``swa_lr`` and ``average_top_k``, as readable lines."""
    out = []
    if cfg.swa_epochs is not None:
        try:  # the SWA epochs lie in the last stage (stage_problems reports a malformed one)
            last = int(cfg.stages[-1][1]) if cfg.stages else cfg.epochs
        except (TypeError, IndexError, ValueError):
            last = cfg.epochs
        most = last - (cfg.swa_lr is not None)  # with swa_lr the schedule needs an epoch of its own
        if not 2 <= cfg.swa_epochs <= most:
            out.append(f"swa_epochs {cfg.swa_epochs}: averages 2..{most} epochs ("
                       + ("the last stage's epochs" if cfg.stages else "epochs")
                       + (", less one the schedule keeps before SWA's constant swa_lr)" if cfg.swa_lr else ")"))
        if cfg.patience is not None:
            out.append(f"swa_epochs with patience {cfg.patience}: an early stop would cut the epochs SWA averages; "
                       "set patience None")
    if cfg.swa_lr is not None and (cfg.swa_epochs is None or cfg.swa_lr <= 0):
        out.append(f"swa_lr {cfg.swa_lr}: the constant lr (> 0) of the swa_epochs SWA epochs; it needs swa_epochs")
    if cfg.average_top_k is not None and not 2 <= cfg.average_top_k <= cfg.epochs:
        out.append(f"average_top_k {cfg.average_top_k}: 2..{cfg.epochs} epochs (for one, use best_epoch monitor)")
    if cfg.average_top_k is not None and getattr(cfg, "full_data", False):
        out.append("average_top_k picks epochs by the validation monitor, which a full_data run does not have: "
                   "average the last epochs with swa_epochs")
    on = [f"{k} {getattr(cfg, k)}" for k in ("swa_epochs", "average_top_k") if getattr(cfg, k) is not None]
    if len(on) == 2:
        out.append(f"{' and '.join(on)}: two averages of the epochs' weights; keep one")
    if on and (cfg.ema is not None or cfg.ema_epochs is not None):
        out.append(f"{on[0]} and EMA (ema / ema_epochs): one average of the weights at a time; keep one")
    if on and cfg.best_epoch != "last":
        out.append(f"{on[0]} decides the weights kept: leave best_epoch 'last', not {cfg.best_epoch!r}")
    return out


def stage_problems(cfg) -> list[str]:
    """What is wrong with ``stages``, ``schedule: plateau`` and its settings, as readable lines."""
    out = []
    if cfg.plateau_patience < 1:
        out.append(f"plateau_patience {cfg.plateau_patience}: >= 1 epochs")
    if not 0 < cfg.plateau_factor < 1:
        out.append(f"plateau_factor {cfg.plateau_factor}: in (0, 1), e.g. 0.5 halves the lr")
    if cfg.schedule == "plateau" and cfg.swa_lr is not None:
        out.append("schedule plateau and swa_lr both set the lr of the last epochs: drop swa_lr (SWA then "
                   "averages the last swa_epochs of the plateau schedule) or use onecycle / flat_cos")
    if cfg.stages is None:
        return out
    good = [s for s in cfg.stages if isinstance(s, (list, tuple)) and len(s) in (2, 3)
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in s[:2])
            and (len(s) == 2 or (isinstance(s[2], (int, float)) and not isinstance(s[2], bool) and s[2] > 0))]
    if not cfg.stages or len(good) < len(cfg.stages):
        bad = [s for s in cfg.stages if s not in good]
        return out + [f"stages {cfg.stages!r}: a list of [img_size, epochs] or [img_size, epochs, lr] (pixels and "
                      f"epochs >= 1, lr > 0), e.g. [[24, 4], [32, 6]]; or None for one stage"
                      + (f" (not a stage: {bad[0]!r})" if bad else "")]
    size, total = cfg.stages[-1][0], sum(s[1] for s in cfg.stages)
    if cfg.img_size != size:
        out.append(f"img_size {cfg.img_size} but the last stage trains at {size}: set img_size {size} (the size "
                   "OOF, test and re-prediction use is the last stage's)")
    if cfg.epochs != total:
        out.append(f"epochs {cfg.epochs} but the stages add up to {total} epochs: set epochs {total} (their total)")
    if cfg.schedule == "plateau":
        out.append("schedule plateau with stages: each stage is one cycle; use onecycle or flat_cos")
    return out
