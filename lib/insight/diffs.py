"""Submission diffs: the test rows on which two or more submissions (files or run folders) disagree.

    d = diff_submissions(["runs/submission.csv", "shared/kim.csv", "runs/convnext_tiny_f0"], comp)
    d.pairs                                  # per pair: rows, how many differ, the share
    d.rows                                   # the rows that differ: id + each one's class (and probability)
    d.confusion[("submission", "kim")]       # class by class: rows one predicts as a and the other as b
    diff_gallery(d, comp)                    # the images of those rows, captioned with every prediction

Each entry is read like an ensemble member (``lib.predict.team.read_member``: a submission with probabilities
or labels, a run's test.csv or its folder; a mapping gives it a ``name``), checked against the
competition's test set. Needs only the competition folder and the files: no run of this machine.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lib.core.io import write_csv
from lib.data.competition import Competition
from lib.data.dataset import load_resized
from lib.insight.viz import image_grid, plot_labels
from lib.predict.team import Member, read_member


@dataclass
class SubmissionDiff:
    """``members`` compared; ``labels`` [N, M] class index per test row and member (test order);
    ``pairs`` (a, b, rows, differ, share_differ); ``rows`` (the differing rows: id, n_classes = how
    many different classes they name, then per member its class name and, for probability files,
    ``<member>_p``, its probability); ``confusion`` per pair (rows: a's class, columns: b's)."""
    members: list[Member]
    labels: np.ndarray
    pairs: pd.DataFrame
    rows: pd.DataFrame
    confusion: dict


def diff_submissions(subs, comp: Competition, save_dir=None) -> SubmissionDiff:
    """Compare two or more submissions row by row. With ``save_dir``, ``diff_pairs.csv`` and
    ``diff_rows.csv`` are written there (atomically)."""
    members = [s if isinstance(s, Member) else read_member(s, comp) for s in list(subs or [])]
    if len(members) < 2:
        raise ValueError(f"give two submissions or more to compare (got {len(members)}): files or run folders")
    names = [m.name for m in members]
    if len(set(names)) < len(names):
        raise ValueError(f"two submissions share a name in {names}; give them names: {{path: ..., name: ...}}")
    labels = np.stack([m.labels(comp.classes) for m in members], axis=1)  # [N, M]
    shown = np.asarray(comp.names, dtype=object)
    pairs, confusion = [], {}
    for (i, a), (j, b) in itertools.combinations(enumerate(names), 2):
        differ = int((labels[:, i] != labels[:, j]).sum())
        pairs.append({"a": a, "b": b, "rows": len(labels), "differ": differ, "share_differ": differ / len(labels)})
        confusion[(a, b)] = pd.crosstab(pd.Series(shown[labels[:, i]], name=a), pd.Series(shown[labels[:, j]], name=b))
    differ = (labels != labels[:, :1]).any(axis=1)
    rows = pd.DataFrame({"id": comp.test["id"].to_numpy()[differ],
                         "n_classes": [len(set(r)) for r in labels[differ]]})
    for k, m in enumerate(members):
        rows[m.name] = shown[labels[differ, k]]
        p = m.probs(comp.classes)
        if p is not None:
            rows[f"{m.name}_p"] = p[differ, labels[differ, k]].round(4)
    rows = rows.sort_values("n_classes", ascending=False, kind="stable").reset_index(drop=True)
    pairs = pd.DataFrame(pairs, columns=["a", "b", "rows", "differ", "share_differ"])
    if save_dir is not None:
        write_csv(Path(save_dir) / "diff_pairs.csv", pairs)
        write_csv(Path(save_dir) / "diff_rows.csv", rows)
    return SubmissionDiff(members, labels, pairs, rows, confusion)


def diff_gallery(diff: SubmissionDiff, comp: Competition, n: int = 24, ncols: int = 6, size: int = 64):
    """The images of the first ``n`` differing rows (most classes named first), each captioned with
    every member's class (and probability when it has one). Returns the figure."""
    rows = diff.rows.head(n)
    pos = pd.Index(comp.test["id"]).get_indexer(rows["id"])
    labels = diff.labels[pos]  # [n, M]
    shown = plot_labels(comp.names, np.unique(labels).tolist())  # names, or #index without a font for them
    caps = []
    for k, r in enumerate(rows.to_dict("records")):
        caps.append("\n".join(f"{m.name}: {shown[labels[k, j]]}" + (f" ({r[m.name + '_p']:.2f})" if m.name + "_p" in r
                                                                   else "") for j, m in enumerate(diff.members)))
    paths = comp.test["path"].to_numpy()[pos]
    return image_grid([load_resized(p, size) for p in paths], caps, ncols=ncols, size=2.2,
                      caption_lines=len(diff.members),
                      title=f"{len(diff.rows)} test rows on which {', '.join(m.name for m in diff.members)} disagree"
                            + (f" (first {len(rows)})" if len(rows) < len(diff.rows) else ""))
