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

A run is never pushed over a copy there that is further along (complete while this one is not, or
more saved epochs) or that trained another recipe (its params.yaml): ``PushRefused`` names the run,
the URL and what to do. Each push of a run, done, failed or refused, is written down in the run's
``backup.json`` (``last_pushes``; kept on this machine, not mirrored), where the grid and the next
training of the run find a failed one to push again. A URL's credentials (``ftp://user:pass@host/x``)
are never written down or printed: backup.json, messages and errors show them as ``***``
(``lib.core.paths.redact_url``).

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
import yaml

from lib.core.config import defaults
from lib.core.io import atomic_path, file_signature, read_json, write_json
from lib.core.paths import redact_text, redact_url, resolve
from lib.core.rules import backup_problem
from lib.core.rundir import RunDir, load_config, recorded_recipe

MANIFEST = ".foldbook-sync.json"
FIRST, LAST = (RunDir.WEIGHTS, RunDir.STATE), (RunDir.METRICS,)  # push order inside a run
OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "memory"}  # a PUT is atomic
SKIP_DIRS = {"browse"}  # folders of links to images (lib.insight.browse): not runs


class PushRefused(ValueError):
    """A push that would replace a further copy of the run at the destination, or a run of another recipe."""


def open_url(url: str):
    """(fsspec file system, root path in it) of a destination; a plain path is relative to the repo root."""
    problem = backup_problem(url)
    if problem:
        raise ValueError(f"backup destination {redact_url(url)!r}: {problem}")
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
        if rel.as_posix() == RunDir.BACKUP:  # this machine's push record: pushing it would change it again
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
    the run completes. Raises ``PushRefused`` (nothing uploaded) when the copy there is further along or
    of another recipe, or the destination's error; the run's backup.json records how it went."""
    run_dir = Path(run_dir)
    fs, root = open_url(url)
    return _push_run(fs, run_dir, f"{root}/{run_dir.name}", url)


def _push_run(fs, run_dir: Path, remote_dir: str, url: str) -> int:
    """``_push`` of a run folder once ``_conflict`` allows it; backup.json records the outcome."""
    progress = _progress(_local_metrics(run_dir))
    try:
        conflict = _conflict(fs, run_dir, remote_dir)
        if conflict:
            where = f"{redact_url(str(url)).rstrip('/')}/{run_dir.name}"
            raise PushRefused(f"not pushing run {run_dir.name} ({run_dir}) to {where}: {conflict[0]}; nothing was "
                              f"uploaded. {conflict[1]}, or delete {where} to replace it with this one")
        sent = _push(fs, run_dir, remote_dir, _files(run_dir))
    except Exception as e:
        _record(run_dir, url, progress, redact_text(f"{type(e).__name__}: {e}"))
        raise
    _record(run_dir, url, progress, None)
    return sent


def _conflict(fs, run_dir: Path, remote_dir: str) -> tuple[str, str] | None:
    """(why, what to do) when the copy at ``remote_dir`` trained another recipe than ``run_dir`` (their
    params.yaml) or is further along (complete while this one is not, or more saved epochs); None when
    it holds nothing trained yet (no metrics.json) or this run, at most as far as here."""
    there = _read_remote_json(fs, f"{remote_dir}/{RunDir.METRICS}")
    if there is None:
        return None
    changes = _recipe_changes(fs, run_dir, remote_dir)
    if changes:
        diff = ", ".join(f"{k} {b!r} there, {a!r} here" for k, (a, b) in changes.items())
        return f"the copy there trained another recipe ({diff})", "Give this run another run_name (or sync_to)"
    here, there = _progress(_local_metrics(run_dir)), _progress(there)
    if there > here:
        return (f"the copy there is further along ({_describe(there)}) than this one ({_describe(here)})",
                "Restore it first (python -m lib.ops.backup restore, make restore) to go on from there, or give "
                "this run another run_name")
    return None


def _recipe_changes(fs, run_dir: Path, remote_dir: str) -> dict:
    """{setting: (here, there)} between the run's params.yaml and the destination's; {} when one is missing."""
    try:
        there = yaml.safe_load(fs.cat_file(f"{remote_dir}/{RunDir.PARAMS}"))
    except FileNotFoundError:
        return {}
    if not (run_dir / RunDir.PARAMS).exists():
        return {}
    there = recorded_recipe(there if isinstance(there, dict) else {})
    return load_config(run_dir).differences({**defaults(), **there})  # unset there: the default, as from_yaml reads it


def _describe(progress: tuple[bool, int]) -> str:
    return f"{'complete' if progress[0] else 'not complete'}, {progress[1]} saved epoch(s)"


def _url_key(url: str) -> str:
    """A destination as backup.json records it: a plain path made absolute (from the repo root), a URL
    without its credentials (``redact_url``)."""
    url = str(url)
    return str(resolve(url)) if fsspec.core.split_protocol(url)[0] is None else redact_url(url.rstrip("/"))


def _record(run_dir: Path, url: str, progress: tuple[bool, int], error: str | None) -> None:
    """Write down in the run's backup.json (atomically) its last push to ``url``."""
    pushes = last_pushes(run_dir)
    pushes[_url_key(url)] = {"ok": error is None, "error": error, "complete": progress[0], "epochs": progress[1],
                             "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json(RunDir(run_dir).backup, pushes)


def last_pushes(run_dir) -> dict:
    """{destination URL: its last push of the run from this machine}, from the run's backup.json: ok,
    error (None when it worked; a refusal or the destination's error), complete and epochs (the saved
    epochs it pushed), at (local time). {} when it was never pushed from here."""
    path = RunDir(run_dir).backup
    return read_json(path) if path.exists() else {}


def failed_pushes(run_dir, url: str | None = None) -> dict:
    """{URL: error} of the destinations whose last push of the run failed or was refused (``url``: that one only)."""
    pushes = last_pushes(run_dir)
    if url is not None:
        pushes = {k: v for k, v in pushes.items() if k == _url_key(url)}
    return {k: v["error"] for k, v in pushes.items() if not v["ok"]}


def _is_run(folder: Path) -> bool:
    return folder.is_dir() and (folder / RunDir.PARAMS).exists()


def _local_metrics(run_dir: Path) -> dict | None:
    path = run_dir / RunDir.METRICS
    return read_json(path) if path.exists() else None


def _progress(metrics: dict | None) -> tuple[bool, int]:
    """(complete, saved epochs) of a metrics.json's content."""
    if not metrics:
        return False, 0
    return bool(metrics.get("complete")), len(metrics.get("epochs") or [])


def sync_runs(runs_dir="runs", url: str | None = None) -> pd.DataFrame:
    """Mirror all of ``runs_dir`` to ``url``: each run folder (``push_run``: a complete one is skipped
    once pushed whole; one whose last push failed or was cut short goes again), the executed notebooks,
    logs and the other tables and folders (ensemble/, analysis/). A unit that could not be pushed (refused,
    or the destination's error) does not stop the others. Returns one row per unit: what, files uploaded,
    complete, epochs, problem (None when it was pushed)."""
    runs_dir = resolve(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"{runs_dir}: no runs folder to back up")
    if not url:
        raise ValueError("no destination: give a URL (make sync SYNC_TO=s3://bucket/prefix, or --to)")
    fs, root = open_url(url)
    if not _atomic_put(fs) and Path(root).resolve().is_relative_to(runs_dir.resolve()):
        raise ValueError(f"{redact_url(url)} is inside {runs_dir}: back up to another disk or bucket")
    rows = []
    for d in sorted(p for p in runs_dir.iterdir() if _is_run(p)):
        complete, epochs = _progress(_local_metrics(d))
        sent, problem = _attempt(lambda d=d: _push_run(fs, d, f"{root}/{d.name}", url))
        rows.append({"what": d.name, "uploaded": sent, "complete": complete, "epochs": epochs, "problem": problem})
    others = [f for f in _files(runs_dir) if not _is_run(runs_dir / f.split("/")[0])]
    sent, problem = _attempt(lambda: _push(fs, runs_dir, root, others))
    rows.append({"what": "(other files)", "uploaded": sent, "complete": None, "epochs": None, "problem": problem})
    return pd.DataFrame(rows, columns=["what", "uploaded", "complete", "epochs", "problem"]).astype({"epochs": "Int64"})


def _attempt(push) -> tuple[int, str | None]:
    """(files uploaded, None) of ``push()``, or (0, the error) when it was refused or the destination failed."""
    try:
        return push(), None
    except (PushRefused, OSError) as e:
        return 0, redact_text(f"{type(e).__name__}: {e}")


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
        raise FileNotFoundError(f"{redact_url(url)}: nothing there to restore (no such bucket or folder)")
    names = [p[len(root) + 1:] for p in fs.find(root) if p.startswith(root + "/")]
    names = [n for n in names if not n.endswith(".tmp") and n.rsplit("/", 1)[-1] != MANIFEST]
    outside = [n for n in names if not _inside(runs_dir, n)]
    if outside:  # a key like run/../../lib/__init__.py would write code the next import runs
        raise ValueError(f"{redact_url(url)}: refusing to restore {len(outside)} key(s) that point outside "
                         f"{runs_dir} (e.g. {outside[0]!r}: a '..', '.', empty or absolute part); nothing was "
                         "restored. Remove them from the bucket, or restore from a prefix that holds only runs")
    runs = sorted({n.split("/")[0] for n in names if n.count("/") == 1 and n.endswith("/params.yaml")})
    rows = []
    for run in runs:
        remote = _progress(_read_remote_json(fs, f"{root}/{run}/metrics.json"))
        local = _progress(_local_metrics(runs_dir / run))
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
