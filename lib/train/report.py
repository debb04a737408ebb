"""What a finished run leaves for people: its learning curves and the environment it ran in."""
from __future__ import annotations

import platform
import subprocess

import albumentations
import fastai
import matplotlib.pyplot as plt
import pandas as pd
import timm
import torch

from lib.core.device import cpu_name
from lib.core.io import atomic_path
from lib.core.paths import repo_root


def plot_curves(history: list, save=None):
    """Loss and metric curves per epoch; saved to ``save`` (PNG) when given. Returns the figure."""

    h = pd.DataFrame(history)
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.6))
    if len(h):
        ep = h["epoch"] + 1
        ax[0].plot(ep, h["train_loss"], "o-", label="train loss")
        ax[0].plot(ep, h["valid_loss"], "o-", label="valid loss")
        ax[0].plot(ep, h["log_loss"], "s--", label="valid log loss")
        ax[1].plot(ep, h["accuracy"], "o-", label="accuracy")
        ax[1].plot(ep, h["f1_macro"], "o-", label="macro F1")
    for a, t in zip(ax, ("loss", "validation metrics")):
        a.set_xlabel("epoch"), a.set_title(t), a.grid(alpha=0.3), a.legend()
    fig.tight_layout()
    if save:
        with atomic_path(save) as tmp:
            fig.savefig(tmp, dpi=90, format="png")
    return fig


def environment(seed: int, device: str) -> dict:
    """Versions, device, git commit and seed: what a run needs to be traced and repeated."""

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_root(), capture_output=True,
                                text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
            "timm": timm.__version__, "fastai": fastai.__version__, "albumentations": albumentations.__version__,
            "device": device, "cpu": cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cuda": torch.version.cuda, "threads": torch.get_num_threads(),
            "git_commit": commit, "seed": seed}
