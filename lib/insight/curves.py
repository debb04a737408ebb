"""Learning curves of every run at once: per model, each fold's training and validation loss and its
monitored metric per epoch, the epoch whose weights the run kept marked, so overfitting (a validation
loss that turns up while the training loss falls) shows without opening each run's notebook.

    runs = find_runs("runs")                 # lib.core.rundir (or open_runs' table)
    table = curve_table(runs)                # one row per run x epoch
    plot_learning_curves(runs)               # one row of panels per model

What is drawn is what each run recorded in metrics.json's ``epochs`` (written after every epoch by
``lib.train.checkpoint``, so a run still training shows its epochs so far). A run whose metrics.json
has no per-epoch history (copied without it, or written by other code) is named in a printed note.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lib.core.io import atomic_path, read_json
from lib.core.rundir import RunDir, recorded_config

CURVE_COLUMNS = ["run_name", "model", "fold", "epoch", "train_loss", "valid_loss", "monitor", "monitor_value",
                 "kept", "complete"]


def run_curve(run_dir) -> pd.DataFrame | None:
    """One run's per-epoch history as a table (CURVE_COLUMNS but run_name, model, fold), None when its
    metrics.json is missing or holds no per-epoch history. ``epoch`` counts from 0; ``monitor`` is
    the metric the run picked its best epoch by (metrics.json, else its params.yaml, else log_loss);
    ``kept`` marks the epoch whose weights it kept (metrics.json's ``weights_epoch``: with weight
    averaging the last averaged one; none while the run is unfinished)."""
    rd = RunDir(run_dir)
    m = read_json(rd.metrics) if rd.metrics.exists() else {}
    epochs = m.get("epochs") or []
    if not epochs:
        return None
    monitor = m.get("monitor") or (recorded_config(rd.path) or {}).get("monitor") or "log_loss"
    h = pd.DataFrame(epochs)
    for c in ("train_loss", "valid_loss", monitor):
        if c not in h.columns:
            h[c] = np.nan
    kept = m.get("weights_epoch")
    return pd.DataFrame({"epoch": h["epoch"].astype(int), "train_loss": h["train_loss"].astype(float),
                         "valid_loss": h["valid_loss"].astype(float), "monitor": monitor,
                         "monitor_value": h[monitor].astype(float),
                         "kept": h["epoch"].to_numpy() == kept if kept is not None else False,
                         "complete": bool(m.get("complete"))})


def curve_table(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """(one row per run x epoch with CURVE_COLUMNS, the run names that recorded no per-epoch history)
    for ``runs`` (``lib.core.rundir.find_runs`` or ``open_runs``' table: run_name, model, fold, dir)."""
    parts, missing = [], []
    for r in runs.itertuples():
        c = run_curve(Path(r.dir))
        if c is None:
            missing.append(r.run_name)
            continue
        c.insert(0, "fold", r.fold)
        c.insert(0, "model", r.model)
        c.insert(0, "run_name", r.run_name)
        parts.append(c)
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=CURVE_COLUMNS)
    return table[CURVE_COLUMNS], missing


def plot_learning_curves(runs: pd.DataFrame, save=None):
    """One row of panels per model: each fold's training loss (solid) and validation loss (dashed),
    then its validation ``monitor`` score (one panel per monitor, when the folds of a model monitored
    different ones), per epoch (from 1, as curves.png), one colour per fold; a star marks the epoch
    whose weights the run kept. Runs without a per-epoch history are named in a printed note. Saved
    to ``save`` (PNG) when given. Returns the figure."""
    table, missing = curve_table(runs)
    if missing:
        print(f"no per-epoch history in metrics.json for {len(missing)} run(s), not drawn: {', '.join(missing)} "
              "(their curves.png, if any, shows them; a run trained by 02_train records it after every epoch)")
    models = list(dict.fromkeys(table["model"]))
    if not models:
        fig = plt.figure(figsize=(5, 1))
        fig.text(0.5, 0.5, "no run recorded a per-epoch history", ha="center")
        return fig
    ncols = 1 + max(table.loc[table["model"] == m, "monitor"].nunique() for m in models)
    fig, axes = plt.subplots(len(models), ncols, figsize=(6 * ncols, 3.0 * len(models)), squeeze=False)
    colours = plt.get_cmap("tab10")
    for row, model in zip(axes, models):
        t = table[table["model"] == model]
        monitors = list(dict.fromkeys(t["monitor"]))
        for k, (_, c) in enumerate(t.groupby("run_name", sort=True)):
            col, ep, kept = colours(k % 10), c["epoch"] + 1, c[c["kept"]]
            fold, done = c["fold"].iloc[0], c["complete"].iloc[0]
            tag = ("full data" if pd.isna(fold) else f"fold {fold}") + ("" if done else " (unfinished)")
            row[0].plot(ep, c["train_loss"], "-", color=col, alpha=0.8, label=f"{tag} train")
            row[0].plot(ep, c["valid_loss"], "--", color=col, label=f"{tag} valid")
            row[0].plot(kept["epoch"] + 1, kept["valid_loss"], "*", color=col, ms=13, mec="black", mew=0.6)
            ax = row[1 + monitors.index(c["monitor"].iloc[0])]
            ax.plot(ep, c["monitor_value"], "o-", color=col, ms=3, label=tag)
            ax.plot(kept["epoch"] + 1, kept["monitor_value"], "*", color=col, ms=13, mec="black", mew=0.6)
        row[0].set_title(f"{model}: loss (solid train, dashed valid; * kept epoch)", fontsize=9)
        for ax, mon in zip(row[1:], monitors):
            ax.set_title(f"{model}: validation {mon} (* kept epoch)", fontsize=9)
        for ax in row[len(monitors) + 1:]:
            ax.axis("off")
        for ax in row[:len(monitors) + 1]:
            ax.set_xlabel("epoch"), ax.grid(alpha=0.3), ax.legend(fontsize=7, ncol=2 if ax is row[0] else 1)
            ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    if save:
        with atomic_path(save) as tmp:
            fig.savefig(tmp, dpi=90, format="png")
    return fig
