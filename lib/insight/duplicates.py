"""Duplicates, label conflicts and train->test leaks from the hashes of ``lib.insight.image_stats``.

Exact duplicates share an md5, near ones a perceptual hash (64 bits to search, 256 to confirm; test
images under their 7 rotations/flips too). Writes ``<root>/eda/duplicates.csv`` and ``conflicts.csv``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, dijkstra

from lib.core.io import write_csv
from lib.data.competition import Competition
from lib.insight.eda import eda_dir


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
    many look-alikes on small, centred images); an image also matches a train image under any of its
    rotations/flips (its dihedral hashes): a mirrored train copy or a rotated test leak.

    Groups are connected components of those matches; each keeps one image (its first train image,
    else its first test image) and every other member is one row naming an image it matched directly
    (``dup_of``: on a shortest path from the kept one, through train images where possible): group,
    kind ("exact": same md5 as dup_of, else "near"), distance and distance256 (bits, to dup_of), id,
    split, label, path, dup_of, dup_of_split, dup_of_label, dup_of_path, conflict (the group holds
    more than one train label). Train rows are the redundant copies (exclude their ids, or use
    ``group`` for grouped folds); test rows with dup_of_split "train" are train->test leaks. Written
    to ``<work>/eda/duplicates.csv``; the train members of conflict groups to ``conflicts.csv``
    (see ``label_conflicts``); every train image with its group to ``groups.csv`` (``fold_groups``),
    which ``lib.data.folds.make_folds`` uses so that no copy validates while its twin trains. Crops defeat
    perceptual hashes: a 5% crop is rarely matched.
    """
    ok = stats[(stats["problem"] == "") & (stats["phash"] != "")].reset_index(drop=True)
    n = len(ok)
    h64, h256 = _dihedral(ok, 1), _dihedral(ok, 4)
    is_test = (ok["split"] == "test").to_numpy()
    first = ~ok["md5"].duplicated().to_numpy()  # one image per distinct file content
    edges = [(np.arange(n), ok["md5"].map(dict(zip(ok.loc[first, "md5"], np.flatnonzero(first)))).to_numpy())]
    u = np.flatnonzero(first)
    i, j = _near_pairs(h64[u, 0], h256[u, 0], None, None, max_distance, verify_distance)
    edges.append((u[i], u[j]))
    tr = np.flatnonzero(first & ~is_test)
    if len(tr):  # every image under its 7 rotations/flips vs the train images as they are
        i, j = _near_pairs(h64[u, 1:].ravel(), h256[u, 1:].reshape(-1, 4), h64[tr, 0], h256[tr, 0],
                           max_distance, verify_distance)
        src, dst = u[i // 7], tr[j]
        edges.append((src[src != dst], dst[src != dst]))  # a symmetric image matches its own mirror
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
        checked = stats.loc[stats["split"] == "train", "id"]
        write_csv(eda_dir(comp) / "groups.csv", fold_groups(comp, ok, group, checked))
    return out


def fold_groups(comp: Competition, ok: pd.DataFrame, component: np.ndarray, checked) -> pd.DataFrame:
    """id, group, checked for every train image: the images of one duplicate group (exact, near, mirrored
    or rotated copies, also when linked through a test image) share a number; every other image, an
    unreadable one too, has a number of its own. ``checked``: the image is one of the ids ``checked`` (the
    train images of this pass: all, or the ``max_images`` sample), so folds know how far duplicates were
    looked for (``lib.data.folds.duplicate_groups``)."""
    train = ok["split"].to_numpy() == "train"
    groups = dict(zip(ok.loc[train, "id"], component[train]))
    ids = comp.train["id"].tolist()
    start = int(component.max()) + 1 if len(component) else 0
    extra = iter(range(start, start + len(ids)))
    return pd.DataFrame({"id": ids, "group": [int(groups[i]) if i in groups else next(extra) for i in ids],
                         "checked": pd.Index(ids).isin(list(checked))})


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
