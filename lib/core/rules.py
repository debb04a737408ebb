"""Which values and mixes of a recipe's settings make sense, as readable lines, and which files and
packages it names are missing: ``TrainConfig.problems`` and ``missing_files`` add them to their own.
The rules of weight averaging and stages (``lib.train.averaging``, ``lib.train.stages``), teachers
(``lib.predict.teacher``), full-data refits (``lib.predict.refit``) and backups (``lib.core.backup``)
live here, below the floors that implement them, so that checking a recipe imports no fastai or torch.
"""
from __future__ import annotations

import fsspec

from lib.core.paths import resolve


def averaging_problems(cfg) -> list[str]:
    """What is wrong with ``swa_epochs``, ``swa_lr`` and ``average_top_k``, as readable lines."""
    out = []
    if cfg.swa_epochs is not None:
        try:  # the SWA epochs lie in the last stage (stage_problems reports a malformed one)
            last = int(cfg.stages[-1][1]) if cfg.stages else cfg.epochs
        except (TypeError, IndexError, ValueError):
            last = cfg.epochs
        frozen = cfg.freeze_epochs if cfg.swa_lr is not None and not (cfg.stages and len(cfg.stages) > 1) else 0
        most = last - frozen - (cfg.swa_lr is not None)  # with swa_lr the schedule needs an epoch of its own
        if not 2 <= cfg.swa_epochs <= most:
            out.append(f"swa_epochs {cfg.swa_epochs}: averages 2..{most} epochs ("
                       + ("the last stage's epochs" if cfg.stages else "epochs")
                       + (f" after the {frozen} freeze_epochs, a cycle of their own" if frozen > 0 else "")
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
    """What is wrong with ``stages``, ``schedule`` (plateau, cosine_restarts) and their settings, and
    ``freeze_epochs``, as readable lines."""
    out = []
    if not cfg.restart_epochs > 0 or cfg.restart_mult < 1:
        out.append(f"restart_epochs {cfg.restart_epochs}, restart_mult {cfg.restart_mult}: the first cycle's "
                   "epochs (> 0, e.g. 1 or 0.5) and each next cycle's factor (>= 1, e.g. 2)")
    try:  # the freeze epochs start the first stage (a malformed stage is reported below)
        first = int(cfg.stages[0][1]) if cfg.stages else cfg.epochs
    except (TypeError, IndexError, ValueError):
        first = cfg.epochs
    if not 0 <= cfg.freeze_epochs < first:
        where = "the first stage's" if cfg.stages else "the run's"
        out.append(f"freeze_epochs {cfg.freeze_epochs}: 0 (off) to {first - 1}; the frozen epochs start {where} "
                   f"{first} epochs, leaving one or more for all layers")
    elif cfg.freeze_epochs and cfg.pretrained == "none" and cfg.init_from is None:
        out.append(f"freeze_epochs {cfg.freeze_epochs} would hold a body that was never trained: set pretrained "
                   "(hub or a weights file) or init_from, or freeze_epochs 0")
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


def teacher_problems(cfg) -> list[str]:
    """The recipe's teacher settings that lib would refuse (``TrainConfig.problems`` calls this)."""
    out = []
    if not 0 <= cfg.teacher_weight <= 1:
        out.append(f"teacher_weight {cfg.teacher_weight}: the teacher's share of each training target, in [0, 1]")
    elif cfg.teacher and cfg.teacher_weight == 0:
        out.append(f"teacher {cfg.teacher!r} with teacher_weight 0 is never used: give a weight in (0, 1] or "
                   "set teacher None")
    if not cfg.teacher_temperature > 0:
        out.append(f"teacher_temperature {cfg.teacher_temperature}: > 0 (1 = the teacher's probabilities as they are)")
    if cfg.pseudo_threshold is not None and not cfg.pseudo_labels:
        out.append(f"pseudo_threshold {cfg.pseudo_threshold} without pseudo_labels: name the test-image teacher "
                   "table, or set pseudo_threshold None")
    elif cfg.pseudo_threshold is not None and not 0 < cfg.pseudo_threshold <= 1:
        out.append(f"pseudo_threshold {cfg.pseudo_threshold}: a probability in (0, 1], e.g. 0.9, or None (all, soft)")
    return out


def missing_tables(cfg) -> list[str]:
    """The teacher tables the recipe names that are not there (``TrainConfig.missing_files``)."""
    return [f"{name} {path!r}: no such teacher table (CSV: id, one column per class, held_out; "
            "lib.predict.teacher.teacher_table writes one)"
            for name, path in (("teacher", cfg.teacher), ("pseudo_labels", cfg.pseudo_labels))
            if path and not resolve(path).is_file()]


# the settings in which a full-data refit differs from its fold runs' recipe by rule (``refit_problems``, the
# grid's --full): it is no fold, trains every image for the epochs the CV chose (``lib.core.rundir.cv_epochs``,
# or -p epochs) and keeps its last epoch's weights; every other setting must be its fold runs' (lib.predict.refit)
REFIT_SETTINGS = ("fold", "full_data", "run_name", "epochs", "best_epoch", "patience", "average_top_k")


def refit_problems(cfg) -> list[str]:
    """What a full-data recipe cannot do (``TrainConfig.problems`` calls this)."""
    if not cfg.full_data:
        return []
    out = []
    if cfg.schedule == "plateau":
        out.append("full_data with schedule plateau: its lr drops when the validation monitor stalls, and a full_data "
                   "run has none, so its lr would follow another path than its fold runs'; train the recipe (folds "
                   "and refit) with schedule onecycle or flat_cos, or leave it without a refit")
    if cfg.best_epoch != "last":
        out.append(f"full_data with best_epoch {cfg.best_epoch!r}: no validation fold picks an epoch; set best_epoch "
                   "'last' and epochs to what the CV chose (lib.core.rundir.cv_epochs, the grid's --full does)")
    if cfg.patience is not None:
        out.append(f"full_data with patience {cfg.patience}: no validation fold to stop on; set patience None")
    return out


def backup_problem(url: str) -> str | None:
    """Why ``url`` cannot be a backup destination here (unknown protocol, its package missing), else None."""
    protocol = fsspec.core.split_protocol(str(url))[0] or "file"
    if protocol not in fsspec.available_protocols():
        return f"fsspec knows no protocol {protocol!r}; use s3://bucket/prefix, gs://bucket/prefix or a folder"
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as e:
        return f"{e} (for s3://: `make env EXTRAS=backup`, i.e. pip install -e '.[backup]')"
    return None
