"""The CV and the public leaderboard score of each submission over time (``lib.predict.lb_log``'s log):
whether the leaderboard follows the CV, and whether the gap between them grows.

    plot_cv_lb(read_lb_log("runs"), save="runs/lb_log.png")
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from lib.core.io import atomic_path
from lib.core.metrics import get_metric


def plot_cv_lb(log: pd.DataFrame, save=None):
    """Per metric of the log, two panels over submission time: each submission's CV (circles) and public
    leaderboard score (squares), joined in time order and numbered as ``lb_table`` numbers them (``#``); and
    the gap (lb - cv) with its zero line. Saved to ``save`` (PNG) when given. Returns the figure."""
    if log.empty:
        fig = plt.figure(figsize=(5, 1))
        fig.text(0.5, 0.5, "no leaderboard score logged yet", ha="center")
        return fig
    metrics = list(dict.fromkeys(log["metric"]))
    fig, axes = plt.subplots(len(metrics), 2, figsize=(12, 3.4 * len(metrics)), squeeze=False)
    number = pd.Series(range(1, len(log) + 1), index=log.index)
    for (ax, ax_gap), metric in zip(axes, metrics):
        t = log[log["metric"] == metric]
        better = "higher" if get_metric(metric)[1] else "lower"
        ax.plot(t["time"], t["cv"], "o-", label="CV (expected)")
        ax.plot(t["time"], t["lb"], "s-", label="public leaderboard")
        for i, r in t.iterrows():
            ax.annotate(f"#{number[i]}", (r["time"], r["lb"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_title(f"{metric} per submission ({better} is better)", fontsize=9)
        ax_gap.axhline(0, color="gray", lw=0.8)
        ax_gap.plot(t["time"], t["gap"], "D-", color="tab:red")
        ax_gap.set_title(f"gap: leaderboard - CV ({metric})", fontsize=9)
        for a in (ax, ax_gap):
            a.grid(alpha=0.3), a.set_xlabel("submitted (UTC)")
            a.tick_params(axis="x", labelrotation=30, labelsize=7)
        ax.legend(fontsize=7)
    fig.tight_layout()
    if save:
        with atomic_path(save) as tmp:
            fig.savefig(tmp, dpi=90, format="png")
    return fig
