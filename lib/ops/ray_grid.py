"""The grid on a Ray cluster: each run is a Ray task on a node that has what the run asks for.

    python -m lib.ops.grid --params params/*.yaml --folds 0-4 --backend ray --address auto \\
        --gpus-per-run 1 --cpus-per-run 8 -p data_dir /shared/data/cars --runs-dir /shared/runs

What the nodes need, and why:
- the code travels with each task (Ray's ``runtime_env`` working_dir: this repo without data/,
  runs/, .venv, .git), so no node needs the repo at the driver's path, and ``ray://`` client mode
  works; each node needs the project's Python environment (the same pins, e.g. one container image),
  whose interpreter and ``foldbook`` kernel run the notebook;
- ``data_dir`` and ``runs_dir`` on a filesystem every node mounts at the same path (give absolute
  paths). A shared runs folder, not an upload of each run's files when it ends: a run that a lost node
  leaves half done is retried on another node, which resumes it from the last epoch the lost one
  saved; an upload at the end would have nothing to resume from.

Resources per run come from ``RayOptions`` (``cpus_per_run``, ``gpus_per_run``, custom ``resources``),
not from what the cluster holds when the grid starts (an autoscaler adds GPU nodes later). Each run's
output streams to ``runs/<run>.log``, each attempt under its ``--- attempt n ---`` line. A task whose worker or node
dies is retried ``max_retries`` times, and the run resumes; a run that still fails is listed with its reason, and
the others go on.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lib.core.paths import repo_root
from lib.ops.jobs import run_command, run_env


@dataclass(frozen=True)
class RayOptions:
    """How the grid uses a Ray cluster (``lib.ops.runner.run_grid(..., backend="ray", ray=RayOptions(...))``).

    ``address``: the cluster (``auto``, ``ray://host:10001``; None: the Ray this process already
    started, else ``$RAY_ADDRESS``'s, else a new local one); ``cpus_per_run`` / ``gpus_per_run``: what
    each run's task asks for (its loader workers; its GPU); ``resources``: custom Ray resources per
    run, a dict, or a function of the job (``lib.ops.jobs.GridJob``) giving one (e.g. to pin runs to
    nodes); ``max_retries``: retries of a run whose worker or node died (it resumes from its last
    saved epoch)."""
    address: str | None = None
    cpus_per_run: float = 1
    gpus_per_run: float = 0
    resources: dict | Callable | None = None
    max_retries: int = 3


# Ray's excludes are .gitignore patterns: a bare "data" would also leave lib/data out of the nodes' copy,
# so the project's own folders are anchored to its root with a leading "/"
EXCLUDES = ["/.git", "/.venv", "/data", "/runs", "/work", "/bundle", "/build", "**/__pycache__", "*.egg-info"]


def _run_job(job, notebook: str):
    """A Ray task: the job's papermill command run in the working dir Ray unpacked (the worker's cwd
    when it started), given to the command as its ``cwd``: the worker process's own cwd is left alone.

    Raises, so that Ray retries the task, when that copy of the code is removed before or during the
    run (Ray nodes sharing one temp dir share it, and a dying node can take it along): the run then
    resumes from its last saved epoch instead of being recorded as failed."""
    work = _working_dir(job.cfg.name)
    inode = _inode(work)
    code, tail = run_command(job.command(notebook, root=work), job.log, {**run_env(work), **job.secret_env}, str(work))
    if code != 0 and _inode(work) != inode:
        raise RuntimeError(f"{job.cfg.name}: the code Ray unpacked for this task ({work}) was removed during "
                           f"the run; Ray retries it. Its last output:\n{tail}")
    return code, tail


_WORK: Path | None = None   # the working dir Ray started this worker process in


def _working_dir(run: str) -> Path:
    """This worker's working dir; when it was removed and unpacked again at the same path (a retry in
    the same worker), that new copy, by its path (the commands run there through ``cwd``; this
    process's cwd stays the removed one)."""
    global _WORK
    try:
        _WORK = Path.cwd()
    except FileNotFoundError:
        if _WORK is None or not (_WORK / "lib").is_dir():
            raise RuntimeError(f"{run}: the code Ray unpacked for this task ({_WORK or 'its cwd'}) was removed "
                               "before it started; Ray retries it") from None
    return _WORK


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def run_on_ray(jobs: list, notebook: str, record, options: RayOptions | None = None) -> None:
    """Run ``jobs`` (``lib.ops.jobs.GridJob``) as Ray tasks as ``options`` say (None: ``RayOptions()``);
    ``record(job, exit code, output tail)`` is called as each ends."""
    options = options or RayOptions()
    try:
        import ray
        from ray.exceptions import RayError
    except ImportError as e:
        raise ImportError(f"--backend ray needs Ray: `make env EXTRAS=cluster` "
                          f"(pip install -e '.[cluster]'); {e}") from e

    ray.init(address=options.address, ignore_reinit_error=True, log_to_driver=False,
             runtime_env={"working_dir": str(repo_root()), "excludes": EXCLUDES})
    resources = options.resources
    print(f"ray: each run asks for {options.cpus_per_run} CPU(s), {options.gpus_per_run} GPU(s)"
          + (f", {resources}" if isinstance(resources, dict) else ""), flush=True)
    refs = {}
    for job in jobs:
        res = resources(job) if callable(resources) else resources
        # retry_exceptions: a task that raised before papermill ran (its unpacked code gone with a lost
        # node's files, say) is retried like one whose node died; a failing notebook is not (exit code)
        task = ray.remote(num_cpus=options.cpus_per_run, num_gpus=options.gpus_per_run, resources=res or None,
                          max_retries=options.max_retries, retry_exceptions=True)(_run_job)
        refs[task.remote(job, notebook)] = job
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        job = refs[ready[0]]
        try:
            code, tail = ray.get(ready[0])
        except RayError as e:  # the task failed for good (node lost past the retries, a crash...)
            code, tail = -1, f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"
        record(job, code, tail)
