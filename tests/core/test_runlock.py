"""lib.core.runlock: one process per run folder, with real processes holding and dying."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from lib.core import runlock
from lib.core.runlock import RunLocked, delete_run, lock_path, lock_run

HOLD = """
import json, os, sys, time
from lib.core.runlock import lock_run, lock_path
lock = lock_run(sys.argv[1], wait_s=float(sys.argv[2]))
if len(sys.argv) > 3:   # pose as a holder on another machine (a shared runs folder)
    rec = json.loads(lock_path(sys.argv[1]).read_text()); rec["host"] = sys.argv[3]
    os.pwrite(lock.fd, json.dumps(rec).encode().ljust(200), 0)
print("locked", flush=True)
sys.stdin.read()        # held until the test closes stdin, or kills this process
"""


def _holder(run_dir, *args):
    """A real process holding ``run_dir``'s lock (it is held once this returns)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir), "0", *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_is_refused_naming_the_folder_and_the_holder(tmp_path):
    run = tmp_path / "runs" / "r_f0"
    proc = _holder(run)
    try:
        with pytest.raises(RunLocked, match=rf"{run} is in use: process {proc.pid} on {socket.gethostname()}"):
            lock_run(run, wait_s=0.5)
    finally:
        proc.kill()                                  # kill -9: no release, the kernel drops the lock
        proc.wait()
    with lock_run(run, wait_s=0) as lock:            # taken at once: a dead holder leaves no stale lock
        assert lock.held and lock.path == tmp_path / "runs" / ".r_f0.lock"
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not lock.held


def test_a_holder_ending_while_waited_for_hands_the_lock_over(tmp_path):
    run = tmp_path / "r_f0"
    proc = _holder(run)
    start = time.monotonic()
    threading.Timer(1.0, proc.kill).start()          # the holder dies while this process waits
    with lock_run(run, wait_s=30):
        waited = time.monotonic() - start
    proc.wait()
    assert 0.8 <= waited < 30


def test_force_deletes_the_folder_under_the_lock_and_keeps_holding_it(tmp_path):
    run = tmp_path / "r_f0"
    run.mkdir()
    (run / "state.pt").write_bytes(b"epochs")
    other = lock_run(tmp_path / "other")
    with pytest.raises(RuntimeError, match="deleted only under its own held lock"):
        delete_run(run, other)
    assert (run / "state.pt").exists()
    with lock_run(run) as lock:
        assert delete_run(run, lock) and not run.exists() and not delete_run(run, lock)
        proc = subprocess.run([sys.executable, "-c", HOLD, str(run), "0.5"], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
        assert "RunLocked" in proc.stderr and "is in use" in proc.stderr        # still held, folder gone
        assert lock_run(run) is lock                                          # re-entrant in this process
    assert lock_path(run).exists()                                            # the lock file stays
    other.release()


def test_a_holder_on_another_host_is_waited_for_longer(tmp_path, monkeypatch):
    """On a shared runs folder a lost node's lock lasts until its NFS lease expires: waited for longer."""
    monkeypatch.setattr(runlock, "LOCAL_WAIT_S", 0.0)
    monkeypatch.setattr(runlock, "REMOTE_WAIT_S", 1.0)
    run = tmp_path / "r_f0"
    proc = _holder(run, "node-7")
    try:
        start = time.monotonic()
        with pytest.raises(RunLocked, match=f"process {proc.pid} on node-7"):
            lock_run(run)
        assert time.monotonic() - start >= 1.0
    finally:
        proc.kill()
        proc.wait()
