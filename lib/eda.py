"""Exploratory analysis: the facts about a competition that decide everything after it.

One pass over the files (``image_stats``: each image read and decoded once, at a small scale, in
parallel; cached in ``<root>/eda/image_stats.csv`` so a rerun is instant) gives per-image statistics
and hashes. Everything else reads the scan tables or that one table:

    class_table, imbalance_ratio        counts, imbalance ratio, classes with fewer images than folds
    geometry_table                      width, height, aspect, file size (image headers, no decode)
    shift_scores, adversarial_auc       train vs test per statistic (KS D) + adversarial AUC
    find_duplicates, label_conflicts    exact (md5) / near (phash) duplicates, label conflicts, leaks
    bad_files                           every file that could not be read, with the reason

Their plots (class counts, geometry, samples, shift, duplicate pairs) are in ``lib.eda_plots``.
Findings are CSVs under ``<root>/eda/`` (image_stats, shift, duplicates, conflicts, bad_files), each
with an ``id`` column, written atomically, so training can exclude ids by naming the file.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from .data import Competition, scan_competition
from .images import BadImageError, read_image
from .io import write_csv

STATS = {  # per-image statistics of the small decode (size x size RGB, 0-255)
    "brightness": "mean luma",
    "contrast": "std of luma",
    "colourfulness": "Hasler-Suesstrunk colourfulness",
    "sharpness": "variance of the Laplacian of luma (low = blurry)",
    "noise": "Immerkaer noise sigma estimate of luma",
    "edge_ratio": "log(horizontal-edge / vertical-edge energy); flips sign under a 90-degree rotation",
    "top_bottom": "mean luma of top half minus bottom half; flips sign when upside down",
    "left_right": "mean luma of left half minus right half; flips sign when mirrored",
}
GEOMETRY = {"width": "pixels", "height": "pixels", "aspect": "width / height", "megapixels": "width*height/1e6",
            "kbytes": "file size in KB"}
_ROWS = ["id", "split", "label", "target", "path", "width", "height", "bytes"]  # scan columns of a stats row
_TEXT = ["path", "problem", "md5", "phash", "phash256", "phash_dihedral", "phash256_dihedral"]
_CACHE = _TEXT + ["file_bytes", "mtime_ns", "decode_size"] + list(STATS)
_DIHEDRAL = (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270,
             Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM, Image.Transpose.TRANSPOSE,
             Image.Transpose.TRANSVERSE)


def open_competition(data_dir, **scan_kwargs) -> Competition:
    """``scan_competition`` of ``data_dir``: absolute, else relative to the repo root (``lib.paths``),
    else relative to the working directory; the same parameter works from notebooks/ and the root."""
    from .paths import resolve
    root = resolve(data_dir)
    if not root.is_dir() and Path(data_dir).is_dir():
        root = Path(data_dir).resolve()
    return scan_competition(root, **scan_kwargs)


def eda_dir(comp: Competition) -> Path:
    return Path(comp.root) / "eda"


def _all_images(comp: Competition) -> pd.DataFrame:
    """Train and test in one table, with a ``split`` column (train first)."""
    return pd.concat([comp.train.assign(split="train"), comp.test.assign(split="test")], ignore_index=True)


# ----------------------------------------------------------------------------------------------
# classes and geometry (scan tables only)


def class_table(comp: Competition, n_folds: int = 5) -> pd.DataFrame:
    """One row per class in submission order: index, name, count, share (%), fewer_than_folds."""
    counts = comp.train["label"].value_counts()
    n = np.array([int(counts.get(c, 0)) for c in comp.classes])
    return pd.DataFrame({"index": range(len(comp.classes)), "name": comp.classes, "count": n,
                         "share": (100.0 * n / max(n.sum(), 1)).round(2), "fewer_than_folds": n < n_folds})


def imbalance_ratio(comp: Competition) -> float:
    """Largest class count / smallest (inf when a class has no image)."""
    n = class_table(comp)["count"]
    return float(n.max() / n.min()) if n.min() > 0 else float("inf")


def _geometry(df: pd.DataFrame) -> pd.DataFrame:
    w, h = df["width"].astype(float), df["height"].astype(float)
    aspect = w / h.where(h > 0)
    return df.assign(aspect=aspect, megapixels=w * h / 1e6, kbytes=df["bytes"] / 1024.0,
                     orientation=np.where((aspect - 1).abs() <= 0.02, "square",
                                          np.where(aspect > 1, "landscape", "portrait")))


def geometry_table(comp: Competition) -> pd.DataFrame:
    """Quantiles of width, height, aspect, megapixels and KB, and orientation shares, per split."""
    out = {}
    for split, df in (("train", comp.train), ("test", comp.test)):
        if len(df):
            g = _geometry(df)
            d = g[list(GEOMETRY)].quantile([0, 0.05, 0.5, 0.95, 1]).T
            d.columns = ["min", "p5", "median", "p95", "max"]
            shares = g["orientation"].value_counts(normalize=True)
            for o in ("landscape", "portrait", "square"):
                d.loc[f"{o} share", "median"] = float(shares.get(o, 0.0))
            out[split] = d
    return pd.concat(out, axis=1).round(3)


# ----------------------------------------------------------------------------------------------
# the one pass: statistics and hashes


def _stats_of(rgb: np.ndarray) -> dict:
    a = rgb.astype(np.float32)
    g = a @ np.array([0.299, 0.587, 0.114], np.float32)
    rg, yb = a[..., 0] - a[..., 1], 0.5 * (a[..., 0] + a[..., 1]) - a[..., 2]
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4 * g[1:-1, 1:-1]
    m = g[:-2, :-2] + g[:-2, 2:] + g[2:, :-2] + g[2:, 2:] - 2 * (g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2]
                                                                 + g[1:-1, 2:]) + 4 * g[1:-1, 1:-1]
    dy, dx = np.abs(np.diff(g, axis=0)).mean(), np.abs(np.diff(g, axis=1)).mean()
    h, w = g.shape
    return {"brightness": g.mean(), "contrast": g.std(),
            "colourfulness": np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()),
            "sharpness": lap.var(), "noise": np.sqrt(np.pi / 2) * np.abs(m).mean() / 6,
            "edge_ratio": np.log((dy + 1e-3) / (dx + 1e-3)),
            "top_bottom": g[: h // 2].mean() - g[h - h // 2:].mean(),
            "left_right": g[:, : w // 2].mean() - g[:, w - w // 2:].mean()}


def stats_one(path: str, size: int = 64, dihedral: bool = False) -> dict:
    """Read ``path`` once: md5 of its bytes; decode at ~``size`` px (EXIF applied), resize to
    ``size x size``; ``STATS`` of that; ``imagehash.phash`` at 64 bits (16 hex digits, for the search)
    and 256 bits (64 hex digits, to confirm a match) and, with ``dihedral``, both hashes of its 7
    rotations/flips (space separated). ``problem`` says why an image could not be read."""
    row = dict.fromkeys(_TEXT, "") | {"path": path}
    try:
        st = os.stat(path)
        row.update(file_bytes=st.st_size, mtime_ns=st.st_mtime_ns, decode_size=size)
        with open(path, "rb") as f:
            row["md5"] = hashlib.file_digest(f, "md5").hexdigest()
        rgb = read_image(path, size=size)  # the bytes are in the OS page cache by now
    except BadImageError as e:
        row["problem"] = str(e).replace(f"{path}: ", "")
        return row
    except OSError as e:
        row["problem"] = f"cannot read: {type(e).__name__}: {e}"
        return row
    im = Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR)
    row.update({k: float(v) for k, v in _stats_of(np.asarray(im)).items()})
    row["phash"], row["phash256"] = str(imagehash.phash(im)), str(imagehash.phash(im, hash_size=16))
    if dihedral:
        ims = [im.transpose(t) for t in _DIHEDRAL]
        row["phash_dihedral"] = " ".join(str(imagehash.phash(x)) for x in ims)
        row["phash256_dihedral"] = " ".join(str(imagehash.phash(x, hash_size=16)) for x in ims)
    return row


def _select(df: pd.DataFrame, max_images: int | None, seed: int) -> pd.DataFrame:
    if max_images is None or len(df) <= max_images:
        return df
    return df.sample(max_images, random_state=seed).sort_index()


def image_stats(comp: Competition, size: int = 64, max_images: int | None = None, workers: int | None = None,
                seed: int = 0, chunk: int = 128) -> pd.DataFrame:
    """Per-image statistics and hashes of train and test (at most ``max_images`` of each, drawn at random).

    One row per image: id, split, label, target, path, width, height, bytes, aspect, megapixels,
    kbytes, orientation, md5, phash, phash256 (+ their 7 rotations/flips for test: phash_dihedral,
    phash256_dihedral), ``STATS``, problem ("" when fine).
    Files are processed in parallel (``workers`` processes, default min(8, cores)) in chunks with a
    progress bar; rows are cached in ``<root>/eda/image_stats.csv`` by path, size and mtime, so only
    new or changed files are read again.
    """
    tables = [_select(comp.train, max_images, seed).assign(split="train"),
              _select(comp.test, max_images, seed).assign(split="test")]
    want = pd.concat([t for t in tables if len(t)], ignore_index=True)
    want = want.reindex(columns=_ROWS)
    csv = eda_dir(comp) / "image_stats.csv"
    cache = _read_cache(csv)
    stale = _stale(cache, want["path"], want["split"] == "test", size)
    todo = want.loc[stale, "path"].tolist()
    if todo:
        rows = _run_parallel(todo, size, (want.loc[stale, "split"] == "test").tolist(), workers, chunk)
        new = pd.DataFrame(rows).reindex(columns=_CACHE).set_index("path")
        cache = pd.concat([cache.drop(index=new.index, errors="ignore"), new]) if len(cache) else new
        every = _all_images(comp).reindex(columns=_ROWS)
        write_csv(csv, _geometry(every).merge(cache.reset_index(), on="path", how="inner"))
    out = _geometry(want).merge(cache.reset_index(), on="path", how="left")
    out["target"] = out["target"].astype("Int64")
    return out.drop(columns=["file_bytes", "mtime_ns", "decode_size"])


def _read_cache(csv: Path) -> pd.DataFrame:
    if not csv.exists():
        return pd.DataFrame(columns=_CACHE).set_index("path")
    df = pd.read_csv(csv, usecols=lambda c: c in _CACHE, dtype={c: str for c in _TEXT},
                     keep_default_na=False, na_values={c: [""] for c in _CACHE if c not in _TEXT})
    df = df.reindex(columns=_CACHE)
    df[_TEXT] = df[_TEXT].astype(object).fillna("").astype(str)
    return df.drop_duplicates("path", keep="last").set_index("path")


def _stale(cache: pd.DataFrame, paths: pd.Series, dihedral: pd.Series, size: int) -> np.ndarray:
    """Which ``paths`` have no usable cached row: new, changed (size or mtime), another decode size,
    or missing the hashes asked for (dihedral ones for test)."""
    def stat(p):
        try:
            st = os.stat(p)
            return st.st_size, st.st_mtime_ns
        except OSError:
            return -1, -1
    now = np.array([stat(p) for p in paths], dtype=np.int64).reshape(-1, 2)
    c = cache.reindex(paths.to_numpy())
    hashed = (c["phash256"] != "") & (~dihedral.to_numpy() | (c["phash256_dihedral"] != ""))
    fresh = ((c["file_bytes"] == now[:, 0]) & (c["mtime_ns"] == now[:, 1]) & (c["decode_size"] == size)
             & ((c["problem"] != "") | hashed))
    return ~fresh.fillna(False).to_numpy(bool)


def _run_parallel(paths, size, dihedral, workers, chunk) -> list[dict]:
    """``stats_one`` of every path, in order; in ``workers`` processes, ``chunk`` paths per task."""
    workers = workers or min(8, os.cpu_count() or 1)
    serial = workers <= 1 or len(paths) < 2 * chunk
    args = (stats_one, paths, [size] * len(paths), dihedral)
    rows = []
    with (tqdm(total=len(paths), desc="image stats", mininterval=2, disable=len(paths) < 256) as bar,
          nullcontext() if serial else ProcessPoolExecutor(workers) as ex):
        for row in map(*args) if serial else ex.map(*args, chunksize=chunk):
            rows.append(row)
            bar.update()
    return rows


# ----------------------------------------------------------------------------------------------
# train vs test shift


def shift_scores(comp: Competition, stats: pd.DataFrame, threshold: float = 0.1, alpha: float = 1e-3,
                 adversarial: bool = True, auc_threshold: float = 0.7, save: bool = True) -> pd.DataFrame:
    """How differently train and test are distributed, one row per statistic.

    score: the two-sample Kolmogorov-Smirnov statistic D (0 = same distribution, 1 = disjoint) for
    ``STATS`` and ``GEOMETRY``; the total-variation distance of the shares for ``orientation``; and,
    with ``adversarial``, a last row ``adversarial`` whose score is the 5-fold ROC AUC of a classifier
    telling train from test on all those numbers (0.5 = indistinguishable). A row is flagged when
    score >= ``threshold`` (AUC >= ``auc_threshold``) and its p-value < ``alpha`` (so a few dozen
    images do not raise flags by chance). Written to ``<root>/eda/shift.csv``.
    """
    from scipy.stats import chi2_contingency, ks_2samp
    ok = stats[stats["problem"] == ""]
    tr, te = ok[ok["split"] == "train"], ok[ok["split"] == "test"]
    rows = []
    if len(tr) and len(te):
        for col, what in {**STATS, **GEOMETRY}.items():
            a, b = tr[col].dropna().to_numpy(float), te[col].dropna().to_numpy(float)
            r = ks_2samp(a, b, method="asymp")
            rows.append({"stat": col, "method": "KS D", "score": r.statistic, "p_value": r.pvalue,
                         "train_median": np.median(a), "test_median": np.median(b), "what": what})
        table = pd.crosstab(ok["split"], ok["orientation"])
        shares = table.div(table.sum(axis=1), axis=0)
        tvd = 0.5 * (shares.loc["train"] - shares.loc["test"]).abs().sum()
        p = chi2_contingency(table.to_numpy()).pvalue if table.shape[1] > 1 else 1.0
        rows.append({"stat": "orientation", "method": "total variation", "score": tvd, "p_value": p,
                     "train_median": np.nan, "test_median": np.nan,
                     "what": "train " + ", ".join(f"{k} {v:.0%}" for k, v in shares.loc["train"].items())
                     + "; test " + ", ".join(f"{k} {v:.0%}" for k, v in shares.loc["test"].items())})
    out = pd.DataFrame(rows, columns=["stat", "method", "score", "p_value", "train_median", "test_median", "what"])
    out["flagged"] = (out["score"] >= threshold) & (out["p_value"] < alpha)
    if adversarial and len(tr) >= 10 and len(te) >= 10:
        adv = adversarial_auc(stats)
        out.loc[len(out)] = {"stat": "adversarial", "method": "5-fold HistGradientBoosting ROC AUC",
                             "score": adv["auc"], "p_value": adv["p_value"], "train_median": np.nan,
                             "test_median": np.nan, "what": "train vs test classifier on all stats above",
                             "flagged": adv["auc"] >= auc_threshold and adv["p_value"] < alpha}
    if save:
        write_csv(eda_dir(comp) / "shift.csv", out.assign(id=out["stat"])[["id", *out.columns]])
    return out


def adversarial_auc(stats: pd.DataFrame, max_per_split: int = 10_000, folds: int = 5, seed: int = 0) -> dict:
    """ROC AUC of telling train from test by ``STATS`` + ``GEOMETRY`` (out-of-fold, HistGradientBoosting).

    Returns auc, p_value (Mann-Whitney test of the out-of-fold scores), n_train, n_test.
    """
    from scipy.stats import mannwhitneyu
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from threadpoolctl import threadpool_limits
    ok = stats[stats["problem"] == ""]
    parts = [_select(ok[ok["split"] == s], max_per_split, seed) for s in ("train", "test")]
    df = pd.concat(parts)
    x, y = df[list(STATS) + list(GEOMETRY)].to_numpy(float), (df["split"] == "test").to_numpy(int)
    cv = StratifiedKFold(min(folds, int(y.sum()), int(len(y) - y.sum())), shuffle=True, random_state=seed)
    clf = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, random_state=seed)
    with threadpool_limits(1):  # OpenMP threads next to busy cores (a pool, a build) can be 50x slower
        p = cross_val_predict(clf, x, y, cv=cv, method="predict_proba")[:, 1]
    return {"auc": float(roc_auc_score(y, p)), "p_value": float(mannwhitneyu(p[y == 1], p[y == 0]).pvalue),
            "n_train": int(len(parts[0])), "n_test": int(len(parts[1]))}


# ----------------------------------------------------------------------------------------------
# duplicates, conflicts, leaks


def hex_to_uint64(hexes, words: int = 1) -> np.ndarray:
    """Hex hash strings (16 digits per 64-bit word) -> ``uint64[N]`` (``words`` = 1) or ``uint64[N, words]``."""
    hexes = list(hexes)
    out = np.frombuffer(bytes.fromhex("".join(hexes)), dtype=">u8").astype(np.uint64)
    if len(out) != len(hexes) * words:
        raise ValueError(f"hashes of {16 * words} hex digits expected")
    return out if words == 1 else out.reshape(-1, words)


def hamming_pairs(a: np.ndarray, b: np.ndarray | None = None, max_distance: int = 6,
                  block: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs of 64-bit hashes within ``max_distance`` bits: (i, j, distance) int64 arrays.

    With ``b`` None, pairs i < j within ``a``; else i indexes ``a`` and j indexes ``b``. Brute force
    in blocks of ``block`` rows (XOR + ``np.bitwise_count``): 40k hashes take a few seconds.
    """
    a = np.ascontiguousarray(a, dtype=np.uint64)
    same = b is None
    b = a if same else np.ascontiguousarray(b, dtype=np.uint64)
    out = [(np.zeros(0, np.int64),) * 3]
    for s in range(0, len(a), block):
        cols = b[s:] if same else b
        d = np.bitwise_count(a[s:s + block, None] ^ cols[None, :])
        r, c = np.nonzero(d <= max_distance)
        if same:
            keep = c > r
            r, c = r[keep], c[keep]
        out.append((r + s, c + (s if same else 0), d[r, c]))
    return tuple(np.concatenate([o[k] for o in out]).astype(np.int64) for k in range(3))


def _near_pairs(a64, a256, b64, b256, max_distance: int, verify_distance: int):
    """Pairs (i, j) with 64-bit distance <= ``max_distance`` (found on the distinct values) whose
    256-bit distance is <= ``verify_distance``. ``b64`` None: pairs i < j within ``a``."""
    same = b64 is None
    ua, inv_a = np.unique(a64, return_inverse=True)
    ub, inv_b = (ua, inv_a) if same else np.unique(b64, return_inverse=True)
    ni, nj, _ = hamming_pairs(ua, None if same else ub, max_distance)
    members_a = np.split(np.argsort(inv_a, kind="stable"), np.cumsum(np.bincount(inv_a, minlength=len(ua)))[:-1])
    members_b = members_a if same else np.split(np.argsort(inv_b, kind="stable"),
                                                np.cumsum(np.bincount(inv_b, minlength=len(ub)))[:-1])
    if same:  # images that share one 64-bit hash
        multi = np.flatnonzero(np.bincount(inv_a) > 1)
        ni, nj = np.concatenate([ni, multi]), np.concatenate([nj, multi])
    ii, jj = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for u, v in zip(ni, nj):
        x, y = np.meshgrid(members_a[u], members_b[v], indexing="ij")
        x, y = x.ravel(), y.ravel()
        if same and u == v:
            x, y = x[x < y], y[x < y]
        ii.append(x), jj.append(y)
    i, j = np.concatenate(ii), np.concatenate(jj)
    d = np.bitwise_count(a256[i] ^ (a256 if same else b256)[j]).sum(axis=1)
    return i[d <= verify_distance], j[d <= verify_distance]


def find_duplicates(comp: Competition, stats: pd.DataFrame, max_distance: int = 6, verify_distance: int = 32,
                    save: bool = True) -> pd.DataFrame:
    """Groups of the same picture: identical bytes (md5), or a 64-bit phash within ``max_distance``
    bits confirmed by a 256-bit phash within ``verify_distance`` bits (the short hash alone matches too
    many look-alikes on small, centred images); a test image also matches a train image under any
    rotation/flip (its dihedral hashes).

    Groups are connected components of those matches; each keeps one image (its first train image,
    else its first test image) and every other member is one row naming an image it matched directly
    (``dup_of``: on a shortest path from the kept one, through train images where possible): group,
    kind ("exact": same md5 as dup_of, else "near"), distance and distance256 (bits, to dup_of), id,
    split, label, path, dup_of, dup_of_split, dup_of_label, dup_of_path, conflict (the group holds
    more than one train label). Train rows are the redundant copies (exclude their ids, or use
    ``group`` for grouped folds); test rows with dup_of_split "train" are train->test leaks. Written
    to ``<root>/eda/duplicates.csv``; the train members of conflict groups to ``conflicts.csv``
    (see ``label_conflicts``). Crops defeat perceptual hashes: a 5% crop is rarely matched.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components, dijkstra
    ok = stats[(stats["problem"] == "") & (stats["phash"] != "")].reset_index(drop=True)
    n = len(ok)
    h64, h256 = _dihedral(ok, 1), _dihedral(ok, 4)
    is_test = (ok["split"] == "test").to_numpy()
    first = ~ok["md5"].duplicated().to_numpy()  # one image per distinct file content
    edges = [(np.arange(n), ok["md5"].map(dict(zip(ok.loc[first, "md5"], np.flatnonzero(first)))).to_numpy())]
    u = np.flatnonzero(first)
    i, j = _near_pairs(h64[u, 0], h256[u, 0], None, None, max_distance, verify_distance)
    edges.append((u[i], u[j]))
    tr, te = np.flatnonzero(first & ~is_test), np.flatnonzero(first & is_test)
    if len(tr) and len(te):  # test images under their 7 rotations/flips vs train
        i, j = _near_pairs(h64[te, 1:].ravel(), h256[te, 1:].reshape(-1, 4), h64[tr, 0], h256[tr, 0],
                           max_distance, verify_distance)
        edges.append((te[i // 7], tr[j]))
    ei, ej = np.concatenate([e[0] for e in edges]), np.concatenate([e[1] for e in edges])
    group = connected_components(coo_matrix((np.ones(len(ei)), (ei, ej)), shape=(n, n)), directed=False)[1]
    order = np.lexsort((np.arange(n), is_test, group))  # per group: train first, then scan order
    roots = order[np.r_[True, group[order][1:] != group[order][:-1]]]
    roots = roots[np.bincount(group)[group[roots]] > 1]
    # shortest paths from a virtual node joined to every root: each member's parent is an image it
    # matched directly, as few steps from the root as possible (no distance drifts along a chain), and
    # through train images where it can (an edge touching a test image costs 1000 steps)
    w = np.where(is_test[ei] | is_test[ej], 1000.0, 1.0)
    ei, ej = np.concatenate([ei, np.full(len(roots), n)]), np.concatenate([ej, roots])
    w = np.concatenate([w, np.ones(len(roots))])
    keep = ei != ej
    graph = coo_matrix((w[keep], (ei[keep], ej[keep])), shape=(n + 1, n + 1)).tocsr()
    parent = dijkstra(graph, directed=False, indices=n, return_predecessors=True)[1][:n]
    m = np.flatnonzero((parent >= 0) & (parent != n))
    m = m[np.lexsort((m, group[m]))]
    par = parent[m]
    d64 = np.minimum(np.bitwise_count(h64[m] ^ h64[par, :1]).min(axis=1),
                     np.bitwise_count(h64[m, :1] ^ h64[par]).min(axis=1))
    d256 = np.minimum(np.bitwise_count(h256[m] ^ h256[par, :1]).sum(axis=2).min(axis=1),
                      np.bitwise_count(h256[m, :1] ^ h256[par]).sum(axis=2).min(axis=1))
    train = ok[~is_test]
    n_labels = pd.Series(train["label"].to_numpy()).groupby(group[~is_test]).nunique()
    a, b = ok.iloc[m], ok.iloc[par]
    out = pd.DataFrame({
        "group": pd.factorize(group[m])[0],  # 0, 1, 2, ... in order of appearance
        "kind": np.where(a["md5"].to_numpy() == b["md5"].to_numpy(), "exact", "near"),
        "distance": d64.astype(int), "distance256": d256.astype(int), "id": a["id"].to_numpy(),
        "split": a["split"].to_numpy(), "label": a["label"].fillna("").to_numpy(), "path": a["path"].to_numpy(),
        "dup_of": b["id"].to_numpy(), "dup_of_split": b["split"].to_numpy(),
        "dup_of_label": b["label"].fillna("").to_numpy(), "dup_of_path": b["path"].to_numpy(),
        "conflict": pd.Series(group[m]).map(n_labels).fillna(0).to_numpy() > 1})
    if save:
        write_csv(eda_dir(comp) / "duplicates.csv", out)
        write_csv(eda_dir(comp) / "conflicts.csv", label_conflicts(out))
    return out


def _dihedral(ok: pd.DataFrame, words: int) -> np.ndarray:
    """``uint64[N, 8]`` (``words`` 1) or ``uint64[N, 8, 4]`` (``words`` 4): each image's phash then
    those of its 7 rotations/flips (the phash again where they were not computed, i.e. train)."""
    col = "phash" if words == 1 else "phash256"
    h = hex_to_uint64(ok[col], words)
    out = np.repeat(h[:, None], 8, axis=1)
    has = (ok[f"{col}_dihedral"].fillna("") != "").to_numpy()
    if has.any():
        d = hex_to_uint64(" ".join(ok.loc[has, f"{col}_dihedral"]).split(), words)
        out[has, 1:] = d.reshape(int(has.sum()), 7, *([words] if words > 1 else []))
    return out


def label_conflicts(dups: pd.DataFrame) -> pd.DataFrame:
    """Train images whose duplicate group holds more than one label: group, id, label, labels, path.

    Neither label can be trusted without a look: exclude them all, or fix the label.
    """
    c = dups[dups["conflict"]]
    rows = pd.concat([c.loc[c["split"] == "train", ["group", "id", "label", "path"]],
                      c[["group", "dup_of", "dup_of_label", "dup_of_path"]].set_axis(
                          ["group", "id", "label", "path"], axis=1)]).drop_duplicates(["group", "id"])
    rows = rows.sort_values(["group", "id"], kind="stable").reset_index(drop=True)
    rows["labels"] = rows["group"].map(rows.groupby("group")["label"].agg(lambda s: " | ".join(sorted(set(s)))))
    return rows[["group", "id", "label", "labels", "path"]]


# ----------------------------------------------------------------------------------------------
# bad files


def bad_files(comp: Competition, stats: pd.DataFrame | None = None, save: bool = True) -> pd.DataFrame:
    """Everything that could not be used: the scan's problems plus files the stats pass could not
    decode. Columns: split, id (file stem; "" for problems that are not one file), path, problem.
    Written to ``<root>/eda/bad_files.csv``."""
    from .images import IMAGE_EXTS
    p = comp.problems[["split", "path", "problem"]].copy()
    if stats is not None and len(stats):
        p = pd.concat([p, stats.loc[stats["problem"] != "", ["split", "path", "problem"]]], ignore_index=True)
    p.insert(1, "id", [Path(x).stem if Path(x).suffix.lower() in IMAGE_EXTS else "" for x in p["path"]])
    if stats is not None and len(stats):
        ids = dict(zip(stats["path"], stats["id"]))
        p["id"] = [ids.get(x, i) for x, i in zip(p["path"], p["id"])]
    if save:
        write_csv(eda_dir(comp) / "bad_files.csv", p)
    return p.reset_index(drop=True)
