"""Out-of-fold analysis: leaderboard, confusions, galleries of confused and high-loss images,
noisy-label candidates, per-class scores, calibration and model disagreement.

An OOF table (``lib.predict.oof.load_oof``, or ``open_runs``) has one row per train image: id, fold,
target (class index),
then one probability column per class in the competition's order. Galleries read only the images
they show, at ``size`` pixels (JPEGs are decoded at reduced scale), so they stay fast on any number
of images.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from sklearn.metrics import precision_recall_fscore_support

from lib.core.choices import MONITORS
from lib.core.io import write_csv
from lib.core.metrics import (
    accuracy,
    apply_temperature,
    ece,
    fit_temperature,
    log_loss,
    probs_to_logits,
    reliability_bins,
    scores,
)
from lib.core.paths import resolve
from lib.core.rundir import run_params
from lib.data.competition import Competition
from lib.data.dataset import load_resized
from lib.insight.viz import class_fonts, image_grid, plot_labels
from lib.predict.oof import common_ids

METRIC_COLS = ["log_loss", "accuracy", "f1_macro"]
EPOCH_COLS = ["monitor", "monitor_best", "monitor_last", "monitor_gap", "weights_epoch", "best_epoch", "last_epoch"]


# ---------------------------------------------------------------- the leaderboard

def oof_arrays(oof: pd.DataFrame, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(y int[N], probs float[N, C]) of an OOF table."""
    return oof["target"].to_numpy(np.int64), oof[classes].to_numpy(np.float64)


def monitor_gap(runs: pd.DataFrame) -> pd.Series:
    """Per run, how much better its best epoch scored on its validation fold than its last, in ``monitor``'s
    direction (>= 0): the optimism of picking the epoch on the fold then scored. NaN where not recorded."""
    sign = runs["monitor"].map(lambda m: {True: 1.0, False: -1.0}.get(MONITORS.get(m), np.nan))
    return sign * (runs["monitor_best"] - runs["monitor_last"])


def leaderboard(runs: pd.DataFrame, oofs: dict[str, pd.DataFrame], classes: list[str],
                save=None) -> pd.DataFrame:
    """One row per run (fold = 0..K-1) and one per model (fold = "cv", scored on its full OOF): model,
    fold, n_oof, the OOF log_loss, accuracy, f1_macro; monitor, its validation score at the best epoch
    (monitor_best) and at the last (monitor_last), monitor_gap (``monitor_gap``); weights_epoch (whose
    weights made the OOF), best_epoch, last_epoch; minutes, min_per_epoch and precision (how fast it
    trained, and in what); the parameters that differ between runs. cv rows: the folds' mean
    monitor_best/last/gap (NaN unless all have them) and min_per_epoch, no epochs. What an older
    metrics.json lacks is NaN. Sorted by model; written atomically to ``save`` (CSV) when given."""
    params = run_params(runs).drop(columns=["fold"], errors="ignore")
    if len(runs) < 2:  # nothing differs between one run and itself
        params = params.iloc[:, :0]
    runs = runs.assign(monitor_gap=monitor_gap(runs))
    rows = []
    for model, g in runs.groupby("model", sort=True):
        oof = oofs[model]
        for r in g.itertuples():
            rows.append({"model": model, "fold": int(r.fold), "n_oof": int((oof["fold"] == r.fold).sum()),
                         **{k: getattr(r, k) for k in METRIC_COLS + EPOCH_COLS + ["minutes", "min_per_epoch",
                                                                                  "precision"]},
                         **params.loc[r.run_name].to_dict()})
        y, p = oof_arrays(oof, classes)
        rows.append({"model": model, "fold": "cv", "n_oof": len(oof), **scores(y, p), "monitor": g["monitor"].iloc[0],
                     **{k: g[k].mean(skipna=False) for k in ("monitor_best", "monitor_last", "monitor_gap")},
                     **{k: np.nan for k in ("weights_epoch", "best_epoch", "last_epoch")},
                     "minutes": g["minutes"].sum(), "min_per_epoch": g["min_per_epoch"].mean(),
                     "precision": "/".join(sorted(set(g["precision"].dropna()))) or None,
                     **params.loc[g["run_name"].iloc[0]].to_dict()})
    lb = pd.DataFrame(rows)
    lb["fold"] = lb["fold"].astype(str)
    if save is not None:
        write_csv(resolve(save), lb)
    return lb


def cv_table(lb: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard's full-OOF rows, best log loss first, without per-fold epochs: the OOF scores beside
    the folds' mean validation score of the best epoch (by monitor), of the last, and their gap."""
    cv = lb[lb["fold"] == "cv"].drop(columns=["weights_epoch", "best_epoch", "last_epoch"], errors="ignore")
    return cv.sort_values("log_loss").reset_index(drop=True)


def focus_model(lb: pd.DataFrame, focus: str | None = None) -> str:
    """``focus`` if it is a model of the leaderboard, else (None) the model with the best CV log loss."""
    cv = cv_table(lb)
    if focus is None:
        return str(cv["model"].iloc[0])
    if focus not in set(cv["model"]):
        raise ValueError(f"focus={focus!r} is not a loaded model; choose one of {list(cv['model'])}")
    return focus


# ---------------------------------------------------------------- confusions

def confusion_table(oof: pd.DataFrame, classes: list[str], save=None) -> pd.DataFrame:
    """Counts [C, C]: rows are true classes, columns predicted (argmax) classes, both named by
    ``classes``. Written atomically to ``save`` (CSV, class names as index) when given."""
    y, p = oof_arrays(oof, classes)
    c = len(classes)
    cm = np.bincount(y * c + p.argmax(axis=1), minlength=c * c).reshape(c, c)
    df = pd.DataFrame(cm, index=pd.Index(classes, name="true"), columns=classes)
    if save is not None:
        write_csv(resolve(save), df, index=True)
    return df


def plot_confusion(cm: pd.DataFrame, max_classes: int = 30, names: list[str] | None = None):
    """Heatmap of the errors among the ``max_classes`` classes with the most misclassified images
    (as true or as predicted class); the diagonal is hidden so errors set the colour scale. ``names``
    (``Competition.names``, one per row of ``cm``) label the classes instead of their ids."""
    with class_fonts(list(names) if names is not None else list(cm.index)):

        a = cm.to_numpy()
        off = a - np.diag(np.diag(a))
        keep = np.argsort(-(off.sum(axis=0) + off.sum(axis=1)), kind="stable")[:max_classes]
        names = np.asarray(plot_labels(list(names) if names is not None else list(cm.index), used=keep), dtype=object)
        sub = pd.DataFrame(off[np.ix_(keep, keep)], index=names[keep], columns=names[keep])
        n = len(keep)
        fig, ax = plt.subplots(figsize=(max(5, 0.38 * n + 3), max(4, 0.34 * n + 2)))
        labels = np.where(sub.to_numpy() > 0, sub.to_numpy().astype(str), "") if n <= 30 else False
        sns.heatmap(sub, mask=np.eye(n, dtype=bool), annot=labels, fmt="", cmap="Reds", cbar=n > 30,
                    annot_kws={"fontsize": 7}, linewidths=0.3, linecolor="#eee", ax=ax)
        ax.set_xlabel("predicted"), ax.set_ylabel("true")
        shown = f"the {n} most-confused of {len(cm)} classes" if n < len(cm) else f"all {n} classes"
        ax.set_title(f"misclassified images, {shown} (diagonal hidden)", fontsize=10)
        fig.tight_layout()
        return fig


def confusion_pairs(cm: pd.DataFrame, top: int | None = None) -> pd.DataFrame:
    """Class pairs ranked by how often they are mistaken for each other, one row per unordered pair
    with at least one error: true, predicted (the more frequent direction), count (true -> predicted),
    reverse (predicted -> true), total, share (count / images of the true class)."""
    a = cm.to_numpy()
    n_true = a.sum(axis=1)
    i, j = np.triu_indices(len(a), k=1)
    fwd, back = a[i, j], a[j, i]
    swap = back > fwd
    t, p = np.where(swap, j, i), np.where(swap, i, j)
    df = pd.DataFrame({"true": cm.index[t], "predicted": cm.columns[p], "count": a[t, p],
                       "reverse": a[p, t], "total": fwd + back})
    df["share"] = df["count"] / np.maximum(n_true[t], 1)
    df = df[df["total"] > 0].sort_values(["total", "count"], ascending=False, kind="stable")
    return df.head(top).reset_index(drop=True) if top else df.reset_index(drop=True)


# ---------------------------------------------------------------- galleries

def _paths(comp: Competition, ids) -> list[str]:
    return comp.train.set_index("id").loc[list(ids), "path"].tolist()


def _row(comp, rows: pd.DataFrame, a: str, b: str, n: int, size: int, color: str):
    """n cells: images of ``rows`` captioned P(A), P(B), padded with blanks."""
    imgs = [load_resized(p, size) for p in _paths(comp, rows["id"])]
    caps = [f"P(A)={r[a]:.2f} P(B)={r[b]:.2f}" for _, r in rows.iterrows()]
    pad = n - len(imgs)
    return (imgs + [np.full((size, size, 3), 255, np.uint8)] * pad, caps + [""] * pad,
            [color] * len(caps) + ["black"] * pad)


def pair_gallery(oof: pd.DataFrame, comp: Competition, a: str, b: str, n: int = 8, size: int = 64):
    """Figure with up to four rows of ``n`` images: A predicted as B (most confident first), typical
    B (highest P(B) among B's), B predicted as A (when there are any), typical A; each captioned with
    P(A) and P(B) from the OOF. Reads only the images shown, squashed to ``size`` px."""
    pred = np.asarray(comp.classes)[oof[comp.classes].to_numpy().argmax(axis=1)]
    label = np.asarray(comp.classes)[oof["target"].to_numpy()]
    used = [comp.classes.index(a), comp.classes.index(b)]
    shown = dict(zip(comp.classes, plot_labels(comp.names, used)))  # names, or #index without a font for them
    rows, names = [], []
    for x, z in ((a, b), (b, a)):
        wrong = oof[(label == x) & (pred == z)].nlargest(n, z)
        if x == a or len(wrong):
            rows.append(_row(comp, wrong, a, b, n, size, "red"))
            names.append(f"{shown[x]} predicted as {shown[z]}")
        rows.append(_row(comp, oof[label == z].nlargest(n, z), a, b, n, size, "green"))
        names.append(f"typical {shown[z]}")
    imgs, caps, cols = (sum((r[k] for r in rows), []) for k in range(3))
    title = f"A = {shown[a]}, B = {shown[b]}.  Rows: " + " | ".join(names)
    return image_grid(imgs, caps, ncols=n, size=1.5, title=title, colors=cols)


def pair_galleries(oof: pd.DataFrame, comp: Competition, pairs: pd.DataFrame, n: int = 8,
                   size: int = 64) -> list:
    """``pair_gallery`` for each (true, predicted) row of a ``confusion_pairs`` table."""
    return [pair_gallery(oof, comp, r.true, r.predicted, n, size) for r in pairs.itertuples()]


def top_losses(oof: pd.DataFrame, classes: list[str], eps: float = 1e-15) -> pd.DataFrame:
    """Every OOF image ranked by its log loss, highest first: id, fold, label, predicted, p_label,
    p_pred, loss (nats, -log of the clipped and renormalised probability of the label)."""
    y, p = oof_arrays(oof, classes)
    q = np.clip(p, eps, 1 - eps)
    q = q / q.sum(axis=1, keepdims=True)
    rows = np.arange(len(y))
    pred = p.argmax(axis=1)
    names = np.asarray(classes, dtype=object)
    df = pd.DataFrame({"id": oof["id"].to_numpy(), "fold": oof["fold"].to_numpy(), "label": names[y],
                       "predicted": names[pred], "p_label": p[rows, y], "p_pred": p[rows, pred],
                       "loss": -np.log(q[rows, y])})
    return df.sort_values("loss", ascending=False, kind="stable").reset_index(drop=True)


def loss_gallery(losses: pd.DataFrame, comp: Competition, ncols: int = 8, size: int = 64):
    """Images of the rows of a ``top_losses`` table, captioned label -> predicted with p_label, p_pred."""
    imgs = [load_resized(p, size) for p in _paths(comp, losses["id"])]
    pos = {c: i for i, c in enumerate(comp.classes)}
    shown = dict(zip(comp.classes, plot_labels(comp.names, [pos[c] for c in (*losses["label"], *losses["predicted"])])))
    caps = [f"{shown[r.label]} ({r.p_label:.2f})\n-> {shown[r.predicted]} ({r.p_pred:.2f})"
            for r in losses.itertuples()]
    return image_grid(imgs, caps, ncols=ncols, size=1.9, title="highest-loss OOF images: label (P) -> predicted (P)",
                      colors=["red" if r.label != r.predicted else "black" for r in losses.itertuples()])


def export_noisy_labels(losses: pd.DataFrame, path, min_p_pred: float = 0.9) -> pd.DataFrame:
    """Rows of a ``top_losses`` table that the model confidently puts in another class
    (predicted != label and p_pred >= min_p_pred): candidate label errors or duplicates. Written
    atomically to ``path`` (id, label, predicted, p_label, p_pred, loss) for 02_train's
    ``exclude_ids``; returned."""
    if not 0 <= min_p_pred <= 1:
        raise ValueError(f"min_p_pred is a probability in [0, 1], got {min_p_pred}")
    bad = losses[(losses["predicted"] != losses["label"]) & (losses["p_pred"] >= min_p_pred)]
    out = bad[["id", "label", "predicted", "p_label", "p_pred", "loss"]].reset_index(drop=True)
    write_csv(resolve(path), out)
    return out


# ---------------------------------------------------------------- per class, calibration, models

def per_class(oof: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Per class: n (true images), accuracy (recall), precision, f1, mean_p_true; worst f1 first."""
    y, p = oof_arrays(oof, classes)
    prec, rec, f1, n = precision_recall_fscore_support(y, p.argmax(axis=1), labels=np.arange(len(classes)),
                                                       zero_division=0)
    mean_p = np.bincount(y, weights=p[np.arange(len(y)), y], minlength=len(classes)) / np.maximum(n, 1)
    df = pd.DataFrame({"class": classes, "n": n, "accuracy": rec, "precision": prec, "f1": f1,
                       "mean_p_true": mean_p})
    return df[df["n"] > 0].sort_values(["f1", "accuracy"], kind="stable").reset_index(drop=True)


def reliability_figure(y, probs, n_bins: int = 15):
    """Reliability diagrams of probs [N, C] before and after temperature scaling fitted on them
    (``fit_temperature``); titles give T, ECE and log loss. Returns (figure, T)."""
    T = fit_temperature(probs_to_logits(probs), y)
    after = apply_temperature(probs_to_logits(probs), T)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharey=True)
    for ax, p, name in ((axes[0], probs, "as predicted"), (axes[1], after, f"temperature T={T:.3f}")):
        b = reliability_bins(y, p, n_bins)
        w = b["bin_upper"] - b["bin_lower"]
        ax.bar(b["bin_lower"], b["accuracy"].fillna(0), width=w, align="edge", edgecolor="k", alpha=0.7,
               label="accuracy")
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        ax.set_title(f"{name}\nECE {ece(y, p, n_bins):.4f}, log loss {log_loss(y, p):.4f}", fontsize=10)
        ax.set_xlabel("top-1 confidence"), ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy in bin"), axes[0].legend(loc="upper left")
    fig.tight_layout()
    return fig, T


def model_disagreement(oofs: dict[str, pd.DataFrame], classes: list[str]) -> pd.DataFrame:
    """Per pair of models, on the ids they share: n, disagree (different argmax), a_right, b_right,
    neither_right (among the disagreements), log loss of each and of their equal-weight probability
    blend, and gain = best single log loss - blend log loss (> 0: blending helps)."""
    rows = []
    for a, b in itertools.combinations(sorted(oofs), 2):
        ids = common_ids({a: oofs[a], b: oofs[b]})
        ya, pa = oof_arrays(oofs[a].set_index("id").loc[ids].reset_index(), classes)
        yb, pb = oof_arrays(oofs[b].set_index("id").loc[ids].reset_index(), classes)
        if not np.array_equal(ya, yb):
            raise ValueError(f"models {a} and {b} give different targets for the same ids; "
                             "were they trained on different data?")
        ra, rb = pa.argmax(axis=1) == ya, pb.argmax(axis=1) == ya
        dis = pa.argmax(axis=1) != pb.argmax(axis=1)
        la, lb_, lblend = log_loss(ya, pa), log_loss(ya, pb), log_loss(ya, (pa + pb) / 2)
        rows.append({"model_a": a, "model_b": b, "n": len(ids), "disagree": int(dis.sum()),
                     "a_right": int((dis & ra).sum()), "b_right": int((dis & rb).sum()),
                     "neither_right": int((dis & ~ra & ~rb).sum()), "log_loss_a": la, "log_loss_b": lb_,
                     "log_loss_blend": lblend, "accuracy_blend": accuracy(ya, (pa + pb) / 2),
                     "gain": min(la, lb_) - lblend})
    cols = ["model_a", "model_b", "n", "disagree", "a_right", "b_right", "neither_right", "log_loss_a",
            "log_loss_b", "log_loss_blend", "accuracy_blend", "gain"]
    return pd.DataFrame(rows, columns=cols).sort_values("gain", ascending=False).reset_index(drop=True)


def analysis_dir(runs_dir) -> Path:
    """``<runs_dir>/analysis``, created."""
    d = resolve(runs_dir) / "analysis"
    d.mkdir(parents=True, exist_ok=True)
    return d
