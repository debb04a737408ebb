"""lib.ops.ray_grid on a real two-node Ray cluster on this machine (a head and a worker, each started
with `ray start` as its own processes, each with a custom resource so every run goes to a given
node): the worker node is killed during a run, a new worker node joins, and the grid ends with every
run complete, the interrupted one resumed from its last saved epoch."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import pytest
import yaml
from shared import kill_tree

from lib.core.paths import repo_root
from lib.ops.ray_grid import EXCLUDES, RayOptions, _run_job
from lib.ops.runner import run_grid
from lib.train.distributed import free_port

RAY = Path(sys.executable).with_name("ray")


def _ray(*args, timeout=120):
    # a test cluster on loopback: no token (Ray's clients default to no auth; a real cluster sets its own)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    return subprocess.run([str(RAY), *args], check=True, capture_output=True, text=True, timeout=timeout, env=env)


def _node(address: str, resource: str):
    # its own temp dir, as a node on its own machine has: nodes sharing one share the code Ray unpacks
    # for the tasks, and the killed node can take it from under the head node's next task
    temp_dir = tempfile.mkdtemp(prefix="rayn")      # short: Ray's socket paths live under it
    _ray("start", f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
         f"--resources={json.dumps({resource: 1})}", f"--temp-dir={temp_dir}", "--disable-usage-stats")
    return temp_dir


def _raylet_pids(resource: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"raylet.*{resource}"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.slow
def test_grid_survives_a_lost_worker_node(digits_comp, tmp_path):
    pytest.importorskip("ray")
    if not RAY.exists():
        pytest.skip(f"no ray command beside {sys.executable}")
    _ray("stop", "--force")
    port = free_port()
    address = f"127.0.0.1:{port}"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"backbone": "test_resnet", "img_size": 48, "batch_size": 32, "epochs": 6,
                                      "lr": 0.003, "n_folds": 2, "data_dir": str(digits_comp)}))
    runs = tmp_path / "runs"
    result, metrics, node_dirs = {}, runs / "r_f1" / "metrics.json", []
    try:
        _ray("start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=1",
             '--resources={"head_node": 1}', "--include-dashboard=false", "--disable-usage-stats")
        node_dirs.append(_node(address, "worker_node"))
        pin = lambda job: {"head_node": 1} if job.cfg.fold == 0 else {"worker_node": 1}  # noqa: E731
        grid = threading.Thread(target=lambda: result.update(run_grid(
            [recipe], [0, 1], runs_dir=str(runs), backend="ray", ray=RayOptions(address, resources=pin))))
        grid.start()
        deadline = time.time() + 400
        while time.time() < deadline:      # fold 0 runs on the head, fold 1 on the worker: kill during fold 1
            if metrics.exists() and len(json.loads(metrics.read_text())["epochs"]) >= 2:
                break
            assert grid.is_alive(), f"the grid ended early: {result}"
            time.sleep(0.05)
        pids = _raylet_pids("worker_node")
        assert pids, "the worker node's raylet was not found"
        kill_tree(pids)                                      # the node and all it started
        killed = json.loads(metrics.read_text())
        assert not killed["complete"], "the run finished before the node was killed"
        time.sleep(3)
        node_dirs.append(_node(address, "worker_node"))      # a replacement node: the retried task runs there
        grid.join(timeout=400)
        assert not grid.is_alive(), "the grid did not end"
    finally:
        import ray
        ray.shutdown()
        _ray("stop", "--force")
        for d in node_dirs:
            shutil.rmtree(d, ignore_errors=True)
    assert sorted(result["done"]) == ["r_f0", "r_f1"] and not result["failed"], result
    done = json.loads(metrics.read_text())
    assert done["complete"] and len(done["epochs"]) == 6
    assert done["epochs"][:len(killed["epochs"])] == killed["epochs"]        # resumed, not restarted
    lost, retried = (runs / "r_f1.log").read_text().split("--- attempt 2 ")   # the retry appended to the log
    assert lost.startswith("--- attempt 1 ") and "epoch 1/6" in lost            # the lost attempt's output is kept
    assert "epoch 6/6" in retried


class _Job:
    """What ``_run_job`` uses of a ``lib.ops.jobs.GridJob``."""
    def __init__(self, log: Path):
        self.cfg, self.log = type("Cfg", (), {"name": "r_f0"})(), log
        self.secret_env = {}

    def command(self, notebook, root):
        return ["papermill", notebook]


def test_a_task_whose_code_was_removed_during_the_run_raises_so_ray_retries_it(tmp_path, monkeypatch):
    work = tmp_path / "_ray_pkg"          # a copy of the code as Ray unpacks it
    (work / "lib").mkdir(parents=True)
    monkeypatch.chdir(work)

    def code_replaced_under_the_run(cmd, log, env, cwd):   # what a dying node sharing the temp dir does
        shutil.rmtree(cwd)
        (Path(cwd) / "lib").mkdir(parents=True)
        return 1, "FileNotFoundError: [Errno 2] No such file or directory"
    monkeypatch.setattr("lib.ops.ray_grid.run_command", code_replaced_under_the_run)
    with pytest.raises(RuntimeError, match="r_f0: the code Ray unpacked .* was removed during the run"):
        _run_job(_Job(tmp_path / "r_f0.log"), "notebooks/02_train.ipynb")

    # the retry, in the same worker: its cwd is gone, the copy unpacked again at the same path is used
    seen = []
    monkeypatch.setattr("lib.ops.ray_grid.run_command",
                        lambda cmd, log, env, cwd: seen.append(cwd) or (1, "a failing notebook"))
    assert _run_job(_Job(tmp_path / "r_f0.log"), "nb") == (1, "a failing notebook")   # a notebook's own failure
    assert seen == [str(work)]                           # the new copy, given to the command as its cwd
    with pytest.raises(FileNotFoundError):
        Path.cwd()                                       # the worker's own cwd is left as it was: no chdir

    shutil.rmtree(work)                                  # removed, and not unpacked again: raise, Ray retries
    with pytest.raises(RuntimeError, match="r_f0: the code Ray unpacked .* was removed before it started"):
        _run_job(_Job(tmp_path / "r_f0.log"), "nb")


def test_the_code_sent_to_the_nodes_has_all_of_lib_and_none_of_data_or_runs(tmp_path):
    """Ray's excludes are .gitignore patterns: an unanchored "data" also left lib/data out of the nodes' copy."""
    pytest.importorskip("ray")
    from ray._private.runtime_env.packaging import _zip_files  # what ray.init(runtime_env=...) packs
    project = tmp_path / "project"                              # the repo's lib beside a competition and runs
    shutil.copytree(repo_root() / "lib", project / "lib", ignore=shutil.ignore_patterns("__pycache__"))
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    for planted in ("data/cars/train/a.jpg", "runs/r_f0/state.pt", "work/cars-1/cache.u8", "build/lib/x.py"):
        (project / planted).parent.mkdir(parents=True, exist_ok=True)
        (project / planted).write_bytes(b"x")
    _zip_files(str(project), EXCLUDES, str(tmp_path / "pkg.zip"), include_gitignore=True)
    sent = set(zipfile.ZipFile(tmp_path / "pkg.zip").namelist())
    lib = {str(p.relative_to(project)) for p in (project / "lib").rglob("*.py")}
    assert lib <= sent, sorted(lib - sent)[:5]
    assert {"lib/data/folds.py", "lib/core/runlock.py", "pyproject.toml"} <= sent
    assert not [n for n in sent if n.split("/")[0] in ("data", "runs", "work", "build")]


@pytest.mark.slow
def test_ray_backend_on_a_local_cluster(digits_comp, tmp_path):
    """Every Ray test lives in this file: they start and stop clusters on this machine, so under
    pytest-xdist (``--dist loadfile``) one worker runs them one after another."""
    ray = pytest.importorskip("ray")
    p = tmp_path / "rayrun.yaml"
    p.write_text(yaml.safe_dump({"backbone": "test_resnet", "img_size": 24, "batch_size": 32, "epochs": 1,
                                 "lr": 0.003, "n_folds": 2, "data_dir": str(digits_comp)}))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        res = run_grid([p], [0], runs_dir=str(tmp_path / "runs"), backend="ray")
    finally:
        ray.shutdown()
    assert res["done"] == ["rayrun_f0"] and not res["failed"]
    assert json.loads((tmp_path / "runs" / "rayrun_f0" / "metrics.json").read_text())["complete"]
