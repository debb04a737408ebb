"""Plots of the exploratory analysis (``lib.insight``: ``eda``, ``image_stats``, ``shift``, ``duplicates``):
each function draws one figure and returns it.

    plot_class_counts       images per class, classes with fewer images than folds in red
    plot_geometry           width, height, aspect, file size and orientation, train vs test
    show_images             any images by id, or random ones of a class
    show_class_grid         a row of random images per class
    plot_shift              train vs test distribution of every statistic, with its shift score
    show_pairs              duplicate pairs side by side (train copies, label conflicts, leaks)

Class names are written when an installed font draws them, else as ``#index`` (``lib.insight.viz.plot_labels``).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lib.data.competition import Competition
from lib.data.images import BadImageError, read_image
from lib.insight.eda import GEOMETRY, STATS, all_images, class_table, imbalance_ratio, with_geometry
from lib.insight.viz import class_fonts, image_grid, plot_labels


def plot_class_counts(comp: Competition, n_folds: int = 5, max_labels: int = 60):
    """Bar plot of images per class, largest first; classes under ``n_folds`` images in red. Beyond
    ``max_labels`` classes the ticks go and only the 3 largest and 3 smallest are named."""
    with class_fonts(comp.names):
        t = class_table(comp, n_folds).sort_values("count", ascending=False, kind="stable").reset_index(drop=True)
        labels = plot_labels(comp.names, t["index"] if len(t) <= max_labels else t["index"].iloc[[0, 1, 2, -3, -2, -1]])
        names = [labels[i] for i in t["index"]]
        n = len(t)
        fig, ax = plt.subplots(figsize=(min(16, max(6, 0.22 * n + 2)), 4.5))
        ax.bar(range(n), t["count"], width=0.85 if n < 200 else 1.0,
               color=np.where(t["fewer_than_folds"], "tab:red", "tab:blue"))
        ax.axhline(n_folds, ls="--", lw=1, c="tab:red")
        ax.annotate(f"{n_folds} = folds", (1, n_folds), xycoords=("axes fraction", "data"), color="tab:red",
                    fontsize=8, ha="right", va="bottom")
        if n <= max_labels:
            ax.set_xticks(range(n), names, rotation=90, fontsize=8)
        else:
            ax.set_xticks([])
            ax.set_xlabel(f"{n} classes, sorted by count")
            def first(ks):
                return ", ".join(f"{names[k]} ({t['count'][k]})" for k in ks)
            ax.text(0.98, 0.95, f"largest: {first(range(3))}\nsmallest: {first(range(n - 1, n - 4, -1))}",
                    transform=ax.transAxes, ha="right", va="top", fontsize=9,
                    bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.8"})
        ratio = imbalance_ratio(comp)
        if ratio > 20:
            ax.set_yscale("log")
        ax.set_ylabel("train images")
        ax.set_title(f"{n} classes, {len(comp.train)} images; imbalance max/min = {ratio:.1f}; "
                     f"{int(t['fewer_than_folds'].sum())} class(es) with fewer than {n_folds} images")
        fig.tight_layout()
        return fig


def _hist(ax, parts: dict, bins=40, log=False):
    vals = [v[np.isfinite(v)] for v in parts.values()]
    allv = np.concatenate(vals) if vals else np.zeros(0)
    if not len(allv):
        return
    lo, hi = np.quantile(allv, [0.005, 0.995])
    if hi - lo < 1e-9:  # one value: a narrow bar, not a spike over a 1e-9 wide axis
        lo, hi, log = lo - 0.5, hi + 0.5, False
    if log and lo > 0:
        edges = np.geomspace(lo, hi * 1.0001, bins + 1)
        ax.set_xscale("log")
    else:
        edges = np.linspace(lo, hi + 1e-9, bins + 1)
    for (name, v), color in zip(parts.items(), ("tab:blue", "tab:orange")):
        if len(v):
            ax.hist(np.clip(v, edges[0], edges[-1]), edges, density=True, alpha=0.5, color=color,
                    histtype="stepfilled", label=f"{name} (median {np.median(v):.3g})")
    ax.legend(fontsize=7, loc="upper right")


def plot_geometry(comp: Competition):
    """Width, height, aspect ratio, file size (KB, log) and orientation shares, train vs test."""
    g = {s: with_geometry(df) for s, df in (("train", comp.train), ("test", comp.test))}
    fig, axes = plt.subplots(1, 5, figsize=(18, 3.4))
    for ax, col in zip(axes, ("width", "height", "aspect", "kbytes")):
        _hist(ax, {s: d[col].to_numpy(float) for s, d in g.items()}, log=col == "kbytes")
        ax.set_title(f"{col} ({GEOMETRY[col]})", fontsize=9)
    shares = pd.DataFrame({s: d["orientation"].value_counts(normalize=True) for s, d in g.items()}).fillna(0)
    shares.plot.bar(ax=axes[4], color=["tab:blue", "tab:orange"][: shares.shape[1]], rot=0)
    axes[4].legend(loc="upper right")
    axes[4].set_title("orientation (share)", fontsize=9)
    fig.tight_layout()
    return fig


def _indices(comp: Competition, labels) -> list[int]:
    """Class indices of the class labels among ``labels`` (test images have none)."""
    pos = {c: i for i, c in enumerate(comp.classes)}
    return [pos[x] for x in labels if isinstance(x, str) and x in pos]


def _thumbs(items, cols: int, size: int):
    """``items`` = [(path, caption)] as a grid of thumbnails decoded at ~``size`` px."""
    images = []
    for path, _ in items:
        try:
            images.append(read_image(path, size=size))
        except BadImageError:
            images.append(None)  # drawn as "unreadable"
    return image_grid(images, [caption for _, caption in items], ncols=cols, size=1.7)


def show_images(comp: Competition, ids=None, label=None, n: int = 16, cols: int = 8, size: int = 160, seed: int = 0):
    """Show the images with these ``ids`` (train first, then test), or ``n`` random train images of
    class ``label`` (name or index), or ``n`` random train images."""
    if ids is not None:
        ids = [str(i) for i in ([ids] if isinstance(ids, str) else ids)]
        df = all_images(comp).drop_duplicates("id").set_index("id")
        missing = [i for i in ids if i not in df.index]
        if missing:
            raise KeyError(f"ids {missing[:10]} are in neither train nor test of {comp.root}")
        rows = df.loc[ids].reset_index()
    else:
        df = comp.train.assign(split="train")
        if label is not None:
            name = comp.classes[label] if isinstance(label, (int, np.integer)) else str(label)
            if name not in comp.classes:
                raise KeyError(f"class {label!r} is not one of the {len(comp.classes)} classes of {comp.root}")
            df = df[df["label"] == name]
        rows = df.sample(min(n, len(df)), random_state=seed)
    names = dict(zip(comp.classes, plot_labels(comp.names, _indices(comp, rows["label"]))))
    items = [(r.path, f"{r.id}\n{r.split}" + (f" {names.get(r.label, '')}" if isinstance(r.label, str) else ""))
             for r in rows.itertuples()]
    return _thumbs(items, cols, size)


def show_class_grid(comp: Competition, per_class: int = 6, classes=None, max_classes: int = 16, seed: int = 0):
    """A row of ``per_class`` random train images per class: ``classes`` (names or indices), else all
    classes when there are at most ``max_classes``, else ``max_classes`` spread over the count ranking
    (the largest, the smallest and evenly in between)."""
    with class_fonts(comp.names):
        if classes is None:
            t = class_table(comp).sort_values("count", ascending=False, kind="stable")
            pick = np.unique(np.linspace(0, len(t) - 1, min(max_classes, len(t))).round().astype(int))
            classes = t["index"].to_numpy()[pick].tolist()
        idx = [c if isinstance(c, (int, np.integer)) else comp.classes.index(c) for c in classes]
        labels = plot_labels(comp.names, idx)
        fig, axes = plt.subplots(len(idx), per_class, figsize=(1.6 * per_class + 1, 1.6 * len(idx)), squeeze=False)
        for row, k in zip(axes, idx):
            df = comp.train[comp.train["target"] == k]
            df = df.sample(min(per_class, len(df)), random_state=seed)
            for ax in row:
                ax.set_xticks([]), ax.set_yticks([])
                for s in ax.spines.values():
                    s.set_visible(False)
            for ax, path in zip(row, df["path"]):
                ax.imshow(read_image(path, size=128))
            row[0].set_ylabel(f"{labels[k]}\n({(comp.train['target'] == k).sum()})", rotation=0, ha="right",
                              va="center", fontsize=8)
        fig.tight_layout()
        return fig


def plot_shift(stats: pd.DataFrame, scores: pd.DataFrame | None = None, cols: int = 4):
    """Train vs test distribution of every statistic; the title carries its shift score, red when flagged."""
    ok = stats[stats["problem"] == ""]
    sc = scores.set_index("stat") if scores is not None else None
    names = list(STATS) + list(GEOMETRY)
    rows = -(-(len(names) + 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.ravel()[len(names) + 1:]:
        ax.set_axis_off()
    for ax, col in zip(axes.ravel(), names):
        _hist(ax, {s: ok.loc[ok["split"] == s, col].to_numpy(float) for s in ("train", "test")},
              log=col in ("kbytes", "megapixels", "sharpness"))
        _shift_title(ax, col, sc)
    ax = axes.ravel()[len(names)]
    shares = pd.crosstab(ok["orientation"], ok["split"], normalize="columns")
    shares = shares.reindex(columns=[c for c in ("train", "test") if c in shares.columns])
    shares.plot.bar(ax=ax, rot=0, color=["tab:blue", "tab:orange"][: shares.shape[1]])
    ax.legend(loc="upper right")
    _shift_title(ax, "orientation", sc)
    fig.tight_layout()
    return fig


def _shift_title(ax, col, sc):
    if sc is None or col not in sc.index:
        ax.set_title(col, fontsize=9)
        return
    r = sc.loc[col]
    ax.set_title(f"{col}: {r['method']} {r['score']:.2f}" + ("  SHIFT" if r["flagged"] else ""), fontsize=9,
                 color="tab:red" if r["flagged"] else "black")


def show_pairs(comp: Competition, dups: pd.DataFrame, which: str = "train", n: int = 12, per_row: int = 3,
               size: int = 128):
    """Duplicate pairs side by side (member, then the image it duplicates). ``which``: "train" (within
    train), "conflict" (train pairs with different labels), "leak" (test image = a train image),
    "test" (within test), "all". Returns None (and says so) when there is no such pair."""
    sel = {"train": (dups["split"] == "train") & (dups["dup_of_split"] == "train"),
           "conflict": dups["conflict"] & (dups["split"] == "train") & (dups["label"] != dups["dup_of_label"]),
           "leak": (dups["split"] == "test") & (dups["dup_of_split"] == "train"),
           "test": (dups["split"] == "test") & (dups["dup_of_split"] == "test"),
           "all": pd.Series(True, index=dups.index)}
    if which not in sel:
        raise ValueError(f"which={which!r}: choose one of {list(sel)}")
    d = dups[sel[which]]
    print(f"{len(d)} {which} duplicate pair(s)" + (f"; showing {min(n, len(d))}" if len(d) else ""))
    if not len(d):
        return None
    names = dict(zip(comp.classes, plot_labels(comp.names, _indices(comp, [*d.head(n)["label"],
                                                                            *d.head(n)["dup_of_label"]]))))
    items = []
    for r in d.head(n).itertuples():
        items += [(r.path, f"{r.kind} d={r.distance}\n{r.split} {names.get(r.label, '')} {r.id}"),
                  (r.dup_of_path, f"group {r.group}\n{r.dup_of_split} {names.get(r.dup_of_label, '')} {r.dup_of}")]
    return _thumbs(items, 2 * per_row, size)
