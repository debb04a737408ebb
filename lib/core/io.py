"""Atomic file writes: a reader never sees a half-written artifact.

Every writer goes to a temporary file in the same folder, flushes it to disk and renames it over
the target (``os.replace`` is atomic on POSIX and Windows), then flushes the folder (the rename is an
entry of the folder: without that, a power cut can bring back the old file, or none), so an interrupted
run leaves either the old file or the new one, never a truncated one.

A read-modify-write of a file that several processes update (03's review marks) holds ``locked(path)``:
an exclusive lock on ``.<name>.lock`` beside it (the file itself is replaced by each write, so it
cannot carry the lock).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path

import yaml


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    # created like any file (0666 less the umask), not mkstemp's 0600: results are readable by others
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder) -> None:
    """Flush ``folder``'s entries (a rename, a new file) to disk. Where a folder cannot be opened or
    flushed (Windows; some network file systems refuse it) nothing is done: the rename stands."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def locked(path):
    """Hold an exclusive lock for a read-modify-write of ``path`` (other processes' ``locked(path)`` wait):
    ``fcntl.flock`` on ``.<name>.lock`` beside it, created once and left there (removing it could let two
    holders in). The kernel drops the lock when its holder dies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent / f".{path.name}.lock", os.O_CREAT | os.O_RDWR, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield path
    finally:
        os.close(fd)  # closing the only descriptor of this open file releases its lock


def write_text(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=_jsonable) + "\n")


def write_yaml(path, obj) -> Path:
    return write_text(path, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))


def write_csv(path, df, **kwargs) -> Path:
    """Write a DataFrame as UTF-8 CSV (no index unless asked), atomically."""
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, **kwargs)
    return Path(path)


def file_signature(path) -> tuple[int, int]:
    """(size in bytes, mtime in ns) of a file, or (-1, -1) when it cannot be read: what every cache
    of per-file results (scan.csv, image_stats.csv, the image cache) compares to know a file changed."""
    try:
        st = os.stat(path)
    except OSError:
        return -1, -1
    return st.st_size, st.st_mtime_ns


def file_sha1(path) -> str:
    """The sha1 of a file's bytes, 40 hex digits: what names a submission whatever it is called."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha1").hexdigest()


def file_sha256(path) -> str | None:
    """The sha256 of a file's bytes (64 hex digits), or None when there is no such file: what a bundle's
    manifest and a run's data.json (``lib.core.rundir.data_changes``) record of the files they name."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        return None


def read_json(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _jsonable(o):
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def clock(seconds: float) -> str:
    """A duration for logs, H:MM:SS (ETAs of runs and grids)."""
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
