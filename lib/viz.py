"""Image grids for notebooks: batches, samples, galleries. Korean class names need a CJK font;
``class_font()`` finds one if the machine has it and otherwise plots still render (names may show
as boxes, never as one warning per glyph).
"""
from __future__ import annotations

import logging
import warnings
from functools import lru_cache

import matplotlib.pyplot as plt
import numpy as np

logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)


@lru_cache(maxsize=None)
def class_font() -> str | None:
    """Set matplotlib's sans-serif font to an installed CJK font, if any; return its name."""
    from matplotlib import font_manager

    cjk = ("Noto Sans CJK KR", "Noto Sans KR", "NanumGothic", "Noto Sans CJK JP", "AppleGothic",
           "Malgun Gothic", "UnDotum", "Baekmuk Gulim", "Droid Sans Fallback", "WenQuanYi Zen Hei")
    names = {f.name for f in font_manager.fontManager.ttflist}
    if not names & set(cjk):  # installed after matplotlib built its font cache: register the files
        for f in font_manager.findSystemFonts():
            if any(k in f.lower() for k in ("nanum", "cjk", "gothic", "dotum", "gulim")):
                try:
                    font_manager.fontManager.addfont(f)
                except (OSError, RuntimeError, ValueError):
                    pass
        names = {f.name for f in font_manager.fontManager.ttflist}
    for name in cjk:
        if name in names:
            plt.rcParams["font.sans-serif"] = [name] + list(plt.rcParams["font.sans-serif"])
            plt.rcParams["font.family"] = "sans-serif"
            plt.rcParams["axes.unicode_minus"] = False  # CJK fonts lack U+2212
            return name
    warnings.filterwarnings("ignore", message="Glyph .* missing from font")
    warnings.filterwarnings("ignore", message=".*missing from current font.*")
    return None


def to_display(img) -> np.ndarray:
    """``uint8[H, W, 3]`` or a normalised ``Tensor[3, H, W]`` -> displayable ``float[H, W, 3]`` in [0, 1]."""
    if hasattr(img, "detach"):
        a = img.detach().float().cpu().numpy().transpose(1, 2, 0)
        lo, hi = a.min(), a.max()
        return (a - lo) / (hi - lo + 1e-8)
    a = np.asarray(img)
    return a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a


def image_grid(images, captions=None, ncols: int = 8, size: float = 1.6, title: str | None = None,
               colors=None):
    """Show images in a grid with optional captions (and caption colours); returns the figure."""
    class_font()
    n = len(images)
    if n == 0:
        fig = plt.figure(figsize=(4, 1))
        fig.text(0.5, 0.5, "nothing to show", ha="center")
        return fig
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows * 1.15), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            ax.imshow(to_display(images[k]))
            if captions is not None:
                ax.set_title(str(captions[k]), fontsize=7, color=(colors[k] if colors is not None else "black"))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def show_batch(ds, classes, n: int = 16, ncols: int = 8, seed: int = 0):
    """``n`` augmented samples of an ``ImageDataset`` (what the model sees), captioned by class."""
    idx = np.random.default_rng(seed).choice(len(ds), size=min(n, len(ds)), replace=False)
    items = [ds[int(i)] for i in idx]
    caps = [classes[int(t)] if int(t) >= 0 else "?" for _, t in items]
    return image_grid([x for x, _ in items], caps, ncols=ncols, title="training batch (augmented)")
