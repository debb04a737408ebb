"""Backups off the machine: ``runs/`` mirrored to any fsspec URL, and brought back after a lost machine.

    push_run("runs/convnext_tiny_f0", "s3://team/cars/runs")   # one run (the checkpoint writer, every epoch)
    sync_runs("runs", "s3://team/cars/runs")                    # everything in runs/ (make sync)
    restore_runs("s3://team/cars/runs", "runs")                 # after the machine is lost (make restore)

    python -m lib.ops.backup sync --runs-dir runs --to s3://team/cars/runs
    python -m lib.ops.backup restore --from s3://team/cars/runs --runs-dir runs

A URL is anything fsspec opens: ``s3://bucket/prefix`` (s3fs; credentials and endpoint from the usual
AWS variables or ``FSSPEC_S3_ENDPOINT_URL``), ``gs://...`` (gcsfs), a mounted folder (a plain path,
relative to the repo root). Each run folder is mirrored to ``<URL>/<run>/``: files that changed since
the last push only (size and mtime recorded in ``<URL>/<run>/.foldbook-sync.json``), the best weights
and the resumable state first and ``metrics.json`` last, so a push cut short leaves a state the run
resumes from. Every file appears whole: object stores write an object at once, other file systems get
a temporary name and a rename. Nothing is ever deleted at the destination. Symlinks (``browse/``
exports) and temporary files are not mirrored.

Restore copies back every run that the destination holds further than this machine (more saved epochs,
or complete), and every other file this machine lacks; then ``make grid`` skips complete runs and
resumes the others from their last saved epoch.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import fsspec
import pandas as pd

from lib.core.io import atomic_path, file_signature, read_json
from lib.core.paths import resolve
from lib.core.rules import backup_problem
from lib.core.rundir import RunDir

MANIFEST = ".foldbook-sync.json"
FIRST, LAST = (RunDir.WEIGHTS, RunDir.STATE), (RunDir.METRICS,)  # push order inside a run
OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "memory"}  # a PUT is atomic
SKIP_DIRS = {"browse"}  # folders of links to images (lib.insight.browse): not runs


def open_url(url: str):
    """(fsspec file system, root path in it) of a destination; a plain path is relative to the repo root."""
    problem = backup_problem(url)
    if problem:
        raise ValueError(f"backup destination {url!r}: {problem}")
    if fsspec.core.split_protocol(str(url))[0] is None:
        url = str(resolve(url))
    fs, root = fsspec.core.url_to_fs(str(url))
    fs.invalidate_cache()
    return fs, root.rstrip("/")


def _atomic_put(fs) -> bool:
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    return bool(protocols & OBJECT_STORES)


def _put(fs, local: Path, remote: str) -> None:
    """Upload one file so that readers see the old version or the whole new one."""
    if _atomic_put(fs):
        fs.put_file(str(local), remote)
        return
    parent, name = remote.rsplit("/", 1)
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex[:12]}.tmp"
    fs.put_file(str(local), tmp)
    fs.mv(tmp, remote)


def _write_remote_json(fs, remote: str, obj) -> None:
    data = json.dumps(obj, indent=1).encode()
    if _atomic_put(fs):
        fs.pipe_file(remote, data)
        return
    parent, name = remote.rsplit("/", 1)
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex[:12]}.tmp"
    fs.pipe_file(tmp, data)
    fs.mv(tmp, remote)


def _read_remote_json(fs, remote: str) -> dict | None:
    try:
        return json.loads(fs.cat_file(remote))
    except FileNotFoundError:
        return None


def _files(folder: Path, top_level_only: bool = False) -> list[str]:
    """Regular files under ``folder`` (relative, '/'-separated), without symlinks, temporary files and
    the ``browse/`` exports; push order: weights and state first, metrics.json last."""
    found = []
    for p in sorted(folder.iterdir() if top_level_only else folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_symlink() or not p.is_file() or p.name.endswith(".tmp") or rel.parts[0] in SKIP_DIRS:
            continue
        if any(part.startswith(".") for part in rel.parts):
            continue
        found.append(rel.as_posix())
    rank = {n: k for k, n in enumerate(FIRST)}
    return sorted(found, key=lambda f: (0 if f in rank else 2 if f in LAST else 1, rank.get(f, 0), f))


def _push(fs, local_dir: Path, remote_dir: str, files: list[str]) -> int:
    """Upload ``files`` of ``local_dir`` that differ from what ``remote_dir``'s manifest recorded; the
    manifest is written last. Returns how many were uploaded."""
    manifest = _read_remote_json(fs, f"{remote_dir}/{MANIFEST}") or {"files": {}}
    sent = 0
    for rel in files:
        sig = list(file_signature(local_dir / rel))  # taken before the upload: a file replaced meanwhile goes again
        if sig[0] < 0 or manifest["files"].get(rel) == sig:
            continue
        _put(fs, local_dir / rel, f"{remote_dir}/{rel}")
        manifest["files"][rel] = sig
        sent += 1
    if sent:
        manifest["pushed"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        _write_remote_json(fs, f"{remote_dir}/{MANIFEST}", manifest)
    return sent


def push_run(run_dir, url: str) -> int:
    """Mirror one run folder to ``<url>/<run name>/`` (what changed since its last push); returns the
    number of files uploaded. The checkpoint writer calls it after every saved epoch, training after
    the run completes."""
    run_dir = Path(run_dir)
    fs, root = open_url(url)
    return _push(fs, run_dir, f"{root}/{run_dir.name}", _files(run_dir))


def _is_run(folder: Path) -> bool:
    return folder.is_dir() and (folder / RunDir.PARAMS).exists()


def _progress(metrics: dict | None) -> tuple[bool, int]:
    """(complete, saved epochs) of a metrics.json's content."""
    if not metrics:
        return False, 0
    return bool(metrics.get("complete")), len(metrics.get("epochs") or [])


def sync_runs(runs_dir="runs", url: str | None = None) -> pd.DataFrame:
    """Mirror all of ``runs_dir`` to ``url``: each run folder (complete ones are skipped once pushed
    whole), the executed notebooks, logs and the other tables and folders (ensemble/, analysis/).
    Returns one row per unit: what, files uploaded, complete."""
    runs_dir = resolve(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"{runs_dir}: no runs folder to back up")
    if not url:
        raise ValueError("no destination: give a URL (make sync SYNC_TO=s3://bucket/prefix, or --to)")
    fs, root = open_url(url)
    if not _atomic_put(fs) and Path(root).resolve().is_relative_to(runs_dir.resolve()):
        raise ValueError(f"{url} is inside {runs_dir}: back up to another disk or bucket")
    rows = []
    for d in sorted(p for p in runs_dir.iterdir() if _is_run(p)):
        complete, epochs = _progress(read_json(d / RunDir.METRICS) if (d / RunDir.METRICS).exists() else None)
        rows.append({"what": d.name, "uploaded": _push(fs, d, f"{root}/{d.name}", _files(d)),
                     "complete": complete, "epochs": epochs})
    others = [f for f in _files(runs_dir) if not _is_run(runs_dir / f.split("/")[0])]
    rows.append({"what": "(other files)", "uploaded": _push(fs, runs_dir, root, others), "complete": None,
                 "epochs": None})
    return pd.DataFrame(rows, columns=["what", "uploaded", "complete", "epochs"]).astype({"epochs": "Int64"})


def _get(fs, remote: str, local: Path, sig=None) -> None:
    """Download one file atomically; with the (size, mtime) the manifest recorded for it, the local copy
    gets that mtime back, so the next sync sees it unchanged."""
    with atomic_path(local) as tmp:
        fs.get_file(remote, str(tmp))
    if sig and local.stat().st_size == sig[0]:
        os.utime(local, ns=(sig[1], sig[1]))


def _inside(runs_dir: Path, name: str) -> bool:
    """Whether the bucket key ``name`` (relative, '/'-separated) names a file inside ``runs_dir``."""
    parts = name.split("/")
    if any(part in ("", ".", "..") or "\\" in part for part in parts) or Path(name).is_absolute():
        return False
    return (runs_dir / name).resolve().is_relative_to(runs_dir.resolve())


def restore_runs(url: str, runs_dir="runs") -> pd.DataFrame:
    """Bring back from ``url`` every run it holds further than ``runs_dir`` does (complete, or more
    saved epochs) and every other file ``runs_dir`` lacks; local files are written atomically, a run's
    metrics.json last. Returns one row per run: run, action, remote and local (complete, epochs)."""
    runs_dir = resolve(runs_dir)
    fs, root = open_url(url)
    if not fs.exists(root):
        raise FileNotFoundError(f"{url}: nothing there to restore (no such bucket or folder)")
    names = [p[len(root) + 1:] for p in fs.find(root) if p.startswith(root + "/")]
    names = [n for n in names if not n.endswith(".tmp") and n.rsplit("/", 1)[-1] != MANIFEST]
    outside = [n for n in names if not _inside(runs_dir, n)]
    if outside:  # a key like run/../../lib/__init__.py would write code the next import runs
        raise ValueError(f"{url}: refusing to restore {len(outside)} key(s) that point outside {runs_dir} (e.g. "
                         f"{outside[0]!r}: a '..', '.', empty or absolute part); nothing was restored. Remove "
                         "them from the bucket, or restore from a prefix that holds only runs")
    runs = sorted({n.split("/")[0] for n in names if n.count("/") == 1 and n.endswith("/params.yaml")})
    rows = []
    for run in runs:
        remote = _progress(_read_remote_json(fs, f"{root}/{run}/metrics.json"))
        local_m = runs_dir / run / RunDir.METRICS
        local = _progress(read_json(local_m) if local_m.exists() else None)
        if local[0] or (local >= remote and (runs_dir / run / RunDir.STATE).exists()):
            action = "kept (this machine's copy is as far)"
        else:
            files = [n.split("/", 1)[1] for n in names if n.startswith(run + "/")]
            files = sorted(files, key=lambda f: f in LAST)
            sigs = (_read_remote_json(fs, f"{root}/{run}/{MANIFEST}") or {}).get("files", {})
            for f in files:
                _get(fs, f"{root}/{run}/{f}", runs_dir / run / f, sigs.get(f))
            action = f"restored {len(files)} files"
        rows.append({"run": run, "action": action, "remote_complete": remote[0], "remote_epochs": remote[1],
                     "local_complete_before": local[0], "local_epochs_before": local[1]})
    loose = [n for n in names if n.split("/")[0] not in runs and not (runs_dir / n).exists()]
    sigs = (_read_remote_json(fs, f"{root}/{MANIFEST}") or {}).get("files", {})
    for n in loose:
        _get(fs, f"{root}/{n}", runs_dir / n, sigs.get(n))
    rows.append({"run": "(other files)", "action": f"restored {len(loose)} missing files"})
    return pd.DataFrame(rows, columns=["run", "action", "remote_complete", "remote_epochs", "local_complete_before",
                                       "local_epochs_before"]).astype({"remote_epochs": "Int64",
                                                                       "local_epochs_before": "Int64"})
