"""Image grids and class names for notebook plots.

Class names in any script (e.g. Korean) are drawn by adding an installed font that has their
characters as the last fallback of matplotlib's ``font.family`` inside the figure functions that
draw them (``class_fonts``: ``font.family`` is set back when the figure is made):
Latin text, digits and the minus sign of negative ticks keep the default font. One rule for every figure of every
notebook (``plot_labels``): a class is written by its name when an installed font draws it, else as
``#<index>``, and then the index -> name key of the classes the figure shows is printed beside it
(the cell's text output). Other text no font draws (e.g. Korean file names as image ids in captions)
becomes "?" (``drawable``). So no figure draws a missing glyph and no warning filter is needed.
"""
from __future__ import annotations

import textwrap
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import font_manager as fm
from matplotlib.ft2font import FT2Font

KOREAN = ("한국어",)  # what ``class_font`` makes drawable when not told which names
_CJK_HINTS = ("cjk", "nanum", "gothic", "malgun", "notosanskr", "baekmuk", "gulim", "dotum", "batang", "unfonts")


@lru_cache(maxsize=None)
def _charmap(path: str) -> frozenset:
    try:
        return frozenset(FT2Font(path).get_charmap())
    except Exception:  # noqa: BLE001 - an unreadable font covers nothing
        return frozenset()


def _covered(families=None) -> frozenset:
    """Code points that the fonts of ``families`` (default: ``font.family`` now), the first and its
    fallbacks, can draw."""
    fams = families or plt.rcParams["font.family"]
    return frozenset().union(*(_charmap(fm.findfont(fm.FontProperties(family=[f]))) for f in fams))


@lru_cache(maxsize=64)
def _font_for(need: frozenset) -> str | None:
    """Path of an installed font with every code point in ``need`` (likely CJK fonts tried first)."""
    known = [f.fname for f in fm.fontManager.ttflist]
    paths = list(dict.fromkeys(known + sorted(fm.findSystemFonts())))
    for p in sorted(paths, key=lambda p: not any(h in Path(p).name.lower() for h in _CJK_HINTS)):
        if "lastresort" not in Path(p).name.lower().replace(" ", "") and need <= _charmap(p):
            return p  # (Last Resort maps every code point to a placeholder box)
    return None


def _needed(names) -> frozenset:
    return frozenset(ord(c) for n in names for c in str(n) if not c.isspace())


def font_families(names=KOREAN) -> list[str]:
    """``font.family`` with, as its last fallback, an installed font that draws the characters of
    ``names`` the others cannot (fonts installed after matplotlib built its cache are found too);
    ``font.family`` as it is when it already draws them or no installed font does."""
    fams = list(plt.rcParams["font.family"])
    need = _needed(names)
    if need <= _covered(fams):
        return fams
    path = _font_for(need - _covered(fams))
    if path is None:
        return fams
    if path not in {f.fname for f in fm.fontManager.ttflist}:
        fm.fontManager.addfont(path)
    name = fm.FontProperties(fname=path).get_name()
    return [*[f for f in fams if f != name], name]


def class_font(names=KOREAN) -> str | None:
    """The font family that draws the strings ``names`` (class names, captions; default: Korean text)
    in the figures of this module, or None when no installed font has their characters (``plot_labels``
    then writes ``#index``; for Korean install e.g. ``fonts-nanum``)."""
    fams = font_families(names)
    return fams[-1] if _needed(names) <= _covered(fams) else None


@contextmanager
def class_fonts(names=KOREAN):
    """Inside: matplotlib draws ``names`` too (``font_families`` as ``font.family``); the text made
    inside keeps its font, and ``font.family`` is as before once it ends. Only that key is restored:
    ``matplotlib.rc_context`` would also undo what a backend set up inside it (Jupyter's inline
    backend, activated by the first figure, then shows no later figure)."""
    before = plt.rcParams["font.family"]
    plt.rcParams["font.family"] = font_families(names)
    try:
        yield
    finally:
        plt.rcParams["font.family"] = before


def plot_labels(classes, used=None) -> list[str]:
    """What plots write for each class: its name when the fonts can draw it, else ``#<index>`` (so
    matplotlib never warns about a missing glyph). When a class among ``used`` (indices of the classes
    the figure shows; default: all) is written as ``#<index>``, prints their index -> name key, which
    the notebook shows beside the figure."""
    ok = _covered(font_families(classes))
    labels = [str(c) if all(ord(ch) in ok for ch in str(c) if not ch.isspace()) else f"#{i}"
              for i, c in enumerate(classes)]
    shown = range(len(labels)) if used is None else sorted({int(i) for i in used})
    key = [f"#{i} = {classes[i]}" for i in shown if labels[i] != str(classes[i])]
    if key:
        print(f"class key: {len(key)} name(s) written as #index (no installed font draws them; for Korean "
              "install e.g. fonts-nanum)")
        print(textwrap.fill(" | ".join(k.replace(" ", "\u00a0") for k in key), 110, initial_indent="  ",
                            subsequent_indent="  ").replace("\u00a0", " "))
    return labels


def drawable(text) -> str:
    """``text`` with every character that the fonts of ``font.family`` cannot draw replaced by "?"
    (image ids and file names in captions; class names go through ``plot_labels``)."""
    ok = _covered()
    return "".join(ch if ch.isspace() or ord(ch) in ok else "?" for ch in str(text))


def to_display(img) -> np.ndarray:
    """``uint8[H, W, 3]`` or a normalised ``Tensor[3, H, W]`` -> displayable ``float[H, W, 3]`` in [0, 1]."""
    if hasattr(img, "detach"):
        a = img.detach().float().cpu().numpy().transpose(1, 2, 0)
        lo, hi = a.min(), a.max()
        return (a - lo) / (hi - lo + 1e-8)
    a = np.asarray(img)
    return a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a


def image_grid(images, captions=None, ncols: int = 8, size: float = 1.6, title: str | None = None,
               colors=None, caption_lines: int = 1):
    """Show images in a grid of cells ``size`` inches wide with optional captions (and caption
    colours) of up to ``caption_lines`` lines; an image that is None shows as "unreadable". Returns
    the figure."""
    with class_fonts([*(captions if captions is not None else []), title or ""]):
        return _grid(images, None if captions is None else [drawable(c) for c in captions], ncols, size,
                     drawable(title) if title else title, colors, caption_lines)


def _grid(images, captions, ncols, size, title, colors, caption_lines):
    n = len(images)
    if n == 0:
        fig = plt.figure(figsize=(4, 1))
        fig.text(0.5, 0.5, "nothing to show", ha="center")
        return fig
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    height = size * nrows * (1 + 0.15 * caption_lines)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, height), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            if images[k] is None:
                ax.text(0.5, 0.5, "unreadable", ha="center", transform=ax.transAxes)
            else:
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
    items = [(x, t.argmax() if np.ndim(t) else t) for x, t in (ds[int(i)] for i in idx)]  # soft targets: argmax
    names = plot_labels(classes, used=[int(t) for _, t in items if int(t) >= 0])
    caps = [names[int(t)] if int(t) >= 0 else "?" for _, t in items]
    return image_grid([x for x, _ in items], caps, ncols=ncols, title="training batch (augmented)")
