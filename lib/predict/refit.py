"""Full-data refit: a recipe trained once on every training image, for the epochs its CV chose, and
04 using its test predictions in place of, or beside, the model's fold mean.

    cfg = TrainConfig.from_yaml("params/demo/resnet.yaml", full_data=True, epochs=cv_epochs("runs", "resnet"),
                                run_name="resnet_full")
    train_fold(cfg)                  # runs/resnet_full/: test.csv and metrics.json ("full_data": true), no oof.csv
    python -m lib.ops.grid --params params/demo/resnet.yaml --full     # the same, per recipe, after its fold runs
    tests, refits = refit_tests(tests, runs_dir, comp.classes, "replace", spec=spec)   # 04, before the test temperature

A full-data run (``full_data: true``; named ``<backbone>_full``, or ``<model>_full`` through the grid)
has no validation fold, so nothing can pick its epoch: it keeps its last epoch (``best_epoch: last``,
no ``patience``) and trains for the epochs the CV chose, ``cv_epochs``: the median over the model's
fold runs of the epoch whose weights they kept, counted from 1 (with ``best_epoch: last``, the
recipe's epochs; the full run sees 1/(K-1) more images per epoch). Each epoch is scored on a fixed
sample of its own training images (``SAMPLE``): a check that it learns, optimistic by construction,
kept in metrics.json under ``train_sample``, never as OOF. It writes test.csv and no oof.csv;
``lib.predict.oof`` leaves it out of the OOF tables, the blend and the leaderboard. It must be a refit of
its fold runs' recipe: ``check_refit`` refuses one whose params.yaml differs from theirs beyond
``lib.core.rules.REFIT_SETTINGS`` (fold runs retrained with ``--force`` leave a stale refit behind).

04's ``refit``: the full model has no OOF, so it earns no weight of its own; it takes the weight its
model's fold runs earned in the OOF blend. ``replace``: the model's test prediction is the full
model's instead of the fold mean; ``blend``: ``(1 - share) * fold mean + share * full``. The test
temperature (``lib.predict.calibrate``) is then fitted to that prediction, as to a fold mean, and
``write_ensemble(..., refits=refits)`` records the choice in blend.json (``refit_plan``), so 05
(``predict_submission``) does the same.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from lib.core.paths import resolve
from lib.core.rules import REFIT_SETTINGS
from lib.core.rundir import RunDir, cv_epochs, find_runs, full_data_run, load_config, run_complete
from lib.predict.inference import PredictSpec, predict_fold

MODES = ("none", "replace", "blend")


def full_run_dir(runs_dir, model: str) -> Path:
    return resolve(runs_dir) / f"{model}_full"


def mix(fold_mean: pd.DataFrame, full: pd.DataFrame, share: float, classes: list[str]) -> pd.DataFrame:
    """id + classes, in ``fold_mean``'s row order: ``(1 - share) * fold_mean + share * full``."""
    if set(full["id"]) != set(fold_mean["id"]) or len(full) != len(fold_mean):
        raise ValueError("the full-data run predicts other test ids than the fold runs")
    a = fold_mean[classes].to_numpy(np.float64)
    b = full.set_index("id").loc[fold_mean["id"], classes].to_numpy(np.float64)
    return pd.concat([fold_mean[["id"]].reset_index(drop=True),
                      pd.DataFrame((1 - share) * a + share * b, columns=classes)], axis=1)


def refit_changes(full_dir, fold_dirs) -> dict:
    """{setting: (the refit's value, {fold run: its value})}: where the full-data run ``full_dir`` was
    trained on another recipe (params.yaml, ``load_config``) than the fold runs ``fold_dirs``, leaving
    out what a refit changes by rule (``lib.core.rules.REFIT_SETTINGS``: fold, epochs, best_epoch ...)
    and the runtime settings (``TrainConfig.differences``); {} when it is a refit of their recipe."""
    full, out = load_config(full_dir), {}
    for d in fold_dirs:
        for k, (mine, theirs) in full.differences(load_config(d)).items():
            if k not in REFIT_SETTINGS:
                out.setdefault(k, (mine, {}))[1][Path(d).name] = theirs
    return out


def check_refit(full_dir, model: str, runs_dir) -> None:
    """Refuse the full-data run ``full_dir`` as ``model``'s refit unless it was trained on the recipe of
    ``model``'s completed fold runs in ``runs_dir`` (``refit_changes``): fold runs retrained (``--force``)
    on another recipe leave a stale refit behind, which 04 would blend as theirs. Warns when it trained
    other epochs than the fold runs now choose (``cv_epochs``; ``-p epochs`` may have asked for that)."""
    folds = find_runs(runs_dir, full_data=False)
    folds = folds.loc[folds["model"] == model, "dir"].tolist()
    fix = (f"retrain it (python -m lib.ops.grid --params <{model}'s recipe> --full --force) or set refit 'none'")
    name = Path(full_dir).name
    if not folds:
        raise ValueError(f"{name}: no completed fold run of {model!r} in {resolve(runs_dir)} to check the refit "
                         f"against; {fix}")
    changes = refit_changes(full_dir, folds)
    if changes:
        lines = "; ".join(f"{k} {mine!r} in {name}, " + ", ".join(f"{v!r} in {r}" for r, v in theirs.items())
                          for k, (mine, theirs) in changes.items())
        raise ValueError(f"{name} was trained on another recipe than {model}'s fold runs ({lines}): a stale refit "
                         f"(were the folds retrained since?) is not {model}'s; {fix}")
    try:
        chosen = cv_epochs(runs_dir, model)
    except KeyError:  # a metrics.json from before weights_epoch: nothing to compare
        return
    trained = load_config(full_dir).epochs
    if trained != chosen:
        warnings.warn(f"{name} trained {trained} epochs, {model}'s fold runs now choose {chosen} (cv_epochs): "
                      f"unless -p epochs {trained} was meant, {fix}", stacklevel=3)


def refit_tests(tests: dict, runs_dir, classes: list[str], mode: str = "replace", share: float = 0.5,
                spec: PredictSpec | None = None) -> tuple[dict, pd.DataFrame]:
    """(tests, refits): each model's test prediction (``tests``: model -> id + classes, its fold mean,
    probabilities) with its complete full-data run ``<model>_full`` swapped in by ``mode``: "replace"
    (the full model's), "blend" (``(1 - share) * fold mean + share * full``, ``share`` in (0, 1)) or
    "none". The full model is predicted as ``spec`` says, the spec the fold runs were predicted with
    (``lib.predict.inference.PredictSpec``; None: plain, its test.csv). Models without a full-data run
    keep their fold mean; a full-data run trained on another recipe than its model's fold runs is refused
    (``check_refit``). refits: model, full_run, share (what ``refit_plan`` stores)."""
    if mode not in MODES:
        raise ValueError(f"refit {mode!r}: choose one of {MODES}")
    if mode == "blend" and not 0 < share < 1:
        raise ValueError(f"refit_share {share}: the full model's share in (0, 1) (1 is refit 'replace')")
    spec = spec or PredictSpec()
    out, rows = dict(tests), []
    for m in tests if mode != "none" else []:
        d = full_run_dir(runs_dir, m)
        if not (full_data_run(d) and run_complete(d)):
            continue
        check_refit(d, m, runs_dir)
        if spec.plain:
            full = pd.read_csv(d / RunDir.TEST, dtype={"id": str})
        else:
            full = predict_fold(d, spec, "test")
        s = 1.0 if mode == "replace" else float(share)
        out[m] = mix(tests[m], full, s, classes)
        rows.append({"model": m, "full_run": d.name, "share": s})
    if mode != "none" and not rows:
        warnings.warn(f"refit {mode!r}: none of the models {sorted(tests)} has a complete full-data run "
                      f"(<model>_full) in {resolve(runs_dir)}; the fold means are used", stacklevel=2)
    return out, pd.DataFrame(rows, columns=["model", "full_run", "share"])


def refit_plan(refits: pd.DataFrame | None, models) -> dict:
    """``refits`` (``refit_tests``) as blend.json stores them for 05: {model: {"run", "share"}}, for the
    blend's ``models`` only; ``write_ensemble`` writes it with the rest of the blend, in one file write."""
    if refits is None:
        return {}
    return {r.model: {"run": r.full_run, "share": float(r.share)} for r in refits.itertuples() if r.model in models}
