"""Browse by folder: images sorted into one folder per class, to look through with any image viewer.

    export_oof_mistakes(oofs["convnext"], comp, "runs/browse/oof_mistakes_convnext")  # "03 cat -> 05 dog"/
    export_test_predictions(sub, comp, "runs/browse/test_predicted")                 # "05 dog"/
    export_noisy_labels(noisy, comp, "runs/browse/noisy_labels")                     # 03's noisy_labels.csv

A folder is named by class index and name (``"03 cat"``, or ``"03 cat -> 05 dog"`` for a mistake), so
the folders sort by class and two names never collide; an image keeps its id as its file name. Each
image is a symbolic link to the competition's file where the file system allows links, else a copy.
``manifest.csv`` in the export lists id, folder, file, source, how (symlink or copy) and the
probabilities behind the choice. The export is built beside its destination and moved into place, so
a re-export leaves no stale image; a destination that holds anything but an earlier export is refused,
and so is one inside the competition folder, which is never written to.
"""
from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from lib.core.io import write_csv
from lib.core.paths import resolve
from lib.data.competition import Competition
from lib.predict.team import read_prediction

MANIFEST = "manifest.csv"


def folder_name(index: int, name: str) -> str:
    """``"03 cat"``: a class's folder (characters a file system may refuse become "_")."""
    safe = re.sub(r'[\\/:*?"<>|\x00-\x1f]', "_", str(name)).strip(" .") or "class"
    return f"{index:02d} {safe}"


def export_folders(table: pd.DataFrame, comp: Competition, out_dir, link: bool = True) -> pd.DataFrame:
    """Put the image of each row of ``table`` (id, folder, source + any columns kept in the manifest)
    into ``out_dir/<folder>/``: links where the file system takes them, copies otherwise or with
    ``link=False`` (a folder to carry elsewhere). Returns the manifest (id, folder, file, source, how, ...)."""
    out = resolve(out_dir)
    root = Path(comp.root).resolve()
    if out.resolve() == root or out.resolve().is_relative_to(root):
        raise ValueError(f"{out} is inside the competition folder {root}, which is never written to; "
                         "export under runs/ (e.g. runs/browse/) or another folder")
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).exists():
        raise ValueError(f"{out} holds files that are not an export of lib.insight.browse (no {MANIFEST}); "
                         "choose an empty or new folder")
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir(parents=True)
    try:
        how = "symlink" if link and _can_link(tmp, table["source"].iloc[0] if len(table) else None) else "copy"
        files = []
        for r in table.itertuples(index=False):
            name = re.sub(r'[\\/:*?"<>|]', "_", str(r.id))
            suffix = Path(r.source).suffix
            rel = Path(r.folder) / (name if name.lower().endswith(suffix.lower()) else name + suffix)
            (tmp / rel.parent).mkdir(exist_ok=True)
            if how == "symlink":
                os.symlink(r.source, tmp / rel)
            else:
                shutil.copy2(r.source, tmp / rel)
            files.append(rel.as_posix())
        manifest = table.assign(file=files, how=how)
        manifest = manifest[["id", "folder", "file", "source", "how",
                             *[c for c in table.columns if c not in ("id", "folder", "source")]]]
        write_csv(tmp / MANIFEST, manifest)
        if out.exists():
            shutil.rmtree(out)  # an earlier export: links and copies only (rmtree never follows a link)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"{len(manifest)} images in {manifest['folder'].nunique()} folders under {out} ({how}s)")
    return manifest


def _can_link(folder: Path, source) -> bool:
    """Whether ``folder``'s file system takes symbolic links (FAT, exFAT and some mounts do not)."""
    if source is None:
        return True
    probe = folder / ".link_probe"
    try:
        os.symlink(source, probe)
        probe.unlink()
        return True
    except (OSError, NotImplementedError):
        return False


def _paths(table: pd.DataFrame, ids) -> np.ndarray:
    return table.set_index("id").loc[list(ids), "path"].to_numpy()


def export_oof_mistakes(oof: pd.DataFrame, comp: Competition, out_dir, link: bool = True) -> pd.DataFrame:
    """Every wrong OOF prediction (id, target + one column per class) into ``"<true> -> <predicted>"``
    folders; the manifest keeps true, predicted, p_true and p_predicted."""
    p = oof[comp.classes].to_numpy(np.float64)
    y, pred = oof["target"].to_numpy(np.int64), p.argmax(axis=1)
    wrong = np.flatnonzero(pred != y)
    rows = np.arange(len(y))
    table = pd.DataFrame({
        "id": oof["id"].to_numpy()[wrong],
        "folder": [f"{folder_name(t, comp.names[t])} -> {folder_name(q, comp.names[q])}"
                   for t, q in zip(y[wrong], pred[wrong])],
        "source": _paths(comp.train, oof["id"].to_numpy()[wrong]),
        "true": np.asarray(comp.classes, dtype=object)[y[wrong]],
        "predicted": np.asarray(comp.classes, dtype=object)[pred[wrong]],
        "p_true": p[rows, y][wrong].round(4), "p_predicted": p[rows, pred][wrong].round(4)})
    return export_folders(table.sort_values("p_predicted", ascending=False, kind="stable"), comp, out_dir, link)


def export_test_predictions(sub, comp: Competition, out_dir, link: bool = True) -> pd.DataFrame:
    """Every test image into the folder of its predicted class. ``sub``: a submission (DataFrame or
    file, probabilities or labels) or a run's test.csv; the manifest keeps predicted and p_predicted."""
    kind, pred = read_prediction(sub, comp)
    if kind == "label":
        k, p_k = pred["label"].to_numpy(np.int64), np.full(len(pred), np.nan)
    else:
        p = pred[comp.classes].to_numpy(np.float64)
        k = p.argmax(axis=1)
        p_k = p[np.arange(len(k)), k].round(4)
    table = pd.DataFrame({"id": pred["id"].to_numpy(), "folder": [folder_name(i, comp.names[i]) for i in k],
                          "source": _paths(comp.test, pred["id"]),
                          "predicted": np.asarray(comp.classes, dtype=object)[k], "p_predicted": p_k})
    return export_folders(table, comp, out_dir, link)


def export_noisy_labels(noisy: pd.DataFrame, comp: Competition, out_dir, link: bool = True) -> pd.DataFrame:
    """Noisy-label candidates (``lib.insight.analysis.export_noisy_labels``: id, label, predicted, p_label,
    p_pred, loss) into ``"<label> -> <predicted>"`` folders."""
    index = {str(c): i for i, c in enumerate(comp.classes)}
    folder = lambda c: folder_name(index[str(c)], comp.names[index[str(c)]])
    table = noisy.assign(folder=[f"{folder(a)} -> {folder(b)}" for a, b in zip(noisy["label"], noisy["predicted"])],
                         source=_paths(comp.train, noisy["id"]))
    return export_folders(table, comp, out_dir, link)
