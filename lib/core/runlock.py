"""One process per run folder: a lock held for the whole run, and ``force``'s delete done under it.

    lock = lock_run(run_dir)       # RunLocked (naming the folder and its holder) when another process has it
    delete_run(run_dir, lock)      # force: the folder goes, the lock stays held
    ...                            # train, predict
    lock.release()                 # or the process ends: the kernel drops the lock

The lock is an ``fcntl.flock`` on ``<runs_dir>/.<run>.lock``: beside the run folder, not in it, so that
deleting the folder (``force``) keeps the lock, and the one who deleted it is the one who trains it.
The file records its holder (pid, host, since) for the refusal's message; it is never deleted (a lock
file removed while another process waits on it would let a third one take a second lock).

The kernel drops a flock when its holder dies (kill -9 included), so a crashed run leaves no stale lock.
A holder's children can keep it a few seconds after the holder dies (forked DataLoader workers, a
papermill kernel noticing its parent is gone), and on NFS a lost node's lock lasts until its lease
expires (about 90 s): a locked run is waited for ``LOCAL_WAIT_S`` seconds (``REMOTE_WAIT_S`` when the
holder is on another host, a Ray retry of a lost node's run) before it is refused.

In one process the lock is re-entrant: a notebook that runs ``setup_run`` again gets the lock it holds.
A lock nothing refers to any more (its ``Run`` dropped) is released.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
import weakref
from pathlib import Path

LOCAL_WAIT_S = 10.0    # seconds a run locked by a process of this host is waited for
REMOTE_WAIT_S = 120.0  # ... by a process of another host (NFS: a lost node's lock lasts its lease)
_POLL_S = 0.2


class RunLocked(RuntimeError):
    """Another process holds the run folder's lock: it is training (or deleting) that run."""


class RunLock:
    """A held lock on one run folder (``lock_run``); ``release`` drops it, as the end of the process does."""

    def __init__(self, run_dir: Path, path: Path, fd: int):
        self.run_dir, self.path, self.fd, self.pid = run_dir, path, fd, os.getpid()

    @property
    def held(self) -> bool:
        return self.fd is not None

    def release(self) -> None:
        """Unlock (for every fork of this process too: they share the open file) and close."""
        if self.fd is None:
            return
        if self.pid == os.getpid():  # a forked child closes its copy only: the lock stays its holder's
            _HELD.pop(str(self.path), None)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __del__(self):  # a Run dropped (a notebook's ``run`` set up again for another run) lets its run go
        try:
            self.release()
        except (OSError, TypeError):  # at interpreter exit: the process's end releases it
            pass

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"RunLock({str(self.run_dir)!r}, {'held' if self.held else 'released'})"


# this process's held locks by lock file, while something holds them: the lock is re-entrant per process
_HELD: weakref.WeakValueDictionary[str, RunLock] = weakref.WeakValueDictionary()


def lock_path(run_dir) -> Path:
    """``<runs_dir>/.<run>.lock``: the lock file of ``run_dir``, beside it."""
    run_dir = Path(run_dir)
    return run_dir.parent / f".{run_dir.name}.lock"


def lock_run(run_dir, wait_s: float | None = None) -> RunLock:
    """Take ``run_dir``'s lock (its parent folder is created), or raise ``RunLocked`` naming the folder and
    the process that holds it, after waiting up to ``wait_s`` seconds (None: ``LOCAL_WAIT_S``, or
    ``REMOTE_WAIT_S`` when the holder is on another host) for it to end. Returns the held lock; this
    process's own held lock when it already has it."""
    run_dir = Path(run_dir)
    path = lock_path(run_dir)
    mine = _HELD.get(str(path))
    if mine is not None and mine.held and mine.pid == os.getpid():
        return mine
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    start = time.monotonic()
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _read_holder(fd)
                limit = wait_s if wait_s is not None else (
                    LOCAL_WAIT_S if holder.get("host") in (None, socket.gethostname()) else REMOTE_WAIT_S)
                if time.monotonic() - start >= limit:
                    raise RunLocked(f"{run_dir} is in use: {_describe(holder)} holds its lock ({path}), training "
                                    "or deleting this run. Wait for it to end (or stop it), or give this run "
                                    "another run_name or runs_dir") from None
                time.sleep(_POLL_S)
    except BaseException:
        os.close(fd)
        raise
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "run_dir": str(run_dir),
                         "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, record, 0)
    lock = _HELD[str(path)] = RunLock(run_dir, path, fd)
    return lock


def delete_run(run_dir, lock: RunLock) -> bool:
    """Delete ``run_dir`` (``force``), which ``lock`` must hold; True when there was one to delete."""
    run_dir = Path(run_dir)
    if not lock.held or lock_path(run_dir) != lock.path:
        raise RuntimeError(f"{run_dir}: deleted only under its own held lock ({lock_path(run_dir)}), got {lock!r}")
    if not run_dir.exists():
        return False
    shutil.rmtree(run_dir)
    return True


def _read_holder(fd: int) -> dict:
    """What the holder recorded in the lock file ({} while it is being written, or from an older writer)."""
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (ValueError, OSError):
        return {}


def _describe(holder: dict) -> str:
    if not holder.get("pid"):
        return "another process"
    return f"process {holder['pid']} on {holder.get('host', '?')} (since {holder.get('since', '?')})"
