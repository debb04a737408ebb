"""The grid's runs: every job not yet complete run through papermill, locally or on a Ray cluster.

    res = run_grid(["params/demo/resnet.yaml"], [0, 1, 2], "runs", jobs=2, overrides={"data_dir": "data/digits"})
    res["done"], res["skipped"], res["failed"]             # its command line: python -m lib.ops.grid

A job's run name is ``<params file stem>_f<fold>``: its executed notebook is ``runs/<run>.ipynb``
and its artifacts ``runs/<run>/`` (two params files of one stem are refused). Every recipe (with the
overrides) is checked before anything runs. Completed runs are skipped while their recorded recipe is
the one asked for (another one stops the grid, naming what differs: ``force`` retrains them, deleted
here once before any job starts; no job forces, so a retried one resumes); an interrupted one resumes
(02_train does that); a run another process is training is refused by its lock (``lib.core.runlock``);
a failed one does not stop the others and is reported at the end with its
notebook and error. A run trained with ``sync_to`` fails when its last push does, and a complete
one whose last push failed runs again to push it (no retraining); every run's failed push (its
``backup.json``, ``lib.core.backup``) is listed at the end. With ``jobs=N`` on a machine with GPUs,
each job is pinned to one GPU through ``CUDA_VISIBLE_DEVICES``. The Ray backend sends each job as a
task asking for one GPU (one CPU where the cluster has none); ``runs/`` and the data must be on a
filesystem all nodes share.
Every notebook runs on the project's Jupyter kernel, ``foldbook`` (``make env`` registers it), not
on whatever kernel a notebook was last saved with.
"""
from __future__ import annotations

import dataclasses
import queue
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import ExitStack
from functools import partial

from tqdm import tqdm

from lib.core.backup import failed_pushes
from lib.core.paths import repo_root, resolve
from lib.core.runlock import delete_run, lock_run
from lib.ops.jobs import (
    NOTEBOOK,
    GridClock,
    GridJob,
    _error_of,
    _gpu_count,
    check_kernel,
    make_jobs,
    run_command,
    run_env,
)
from lib.ops.ray_grid import RayOptions, run_on_ray


def run_grid(params_files, folds, runs_dir="runs", jobs: int = 1, backend: str = "local", *,
             overrides: dict | None = None, notebook: str = NOTEBOOK, force: bool = False, full: bool = False,
             ray: RayOptions | None = None) -> dict:
    """Run every job not yet complete, and every complete one whose last push to its ``sync_to`` failed;
    returns {"done": [...], "pushed": [...] (complete, pushed again), "skipped": [...], "failed": [(run, nb,
    error)], "backup_failed": [(run, url, error)] (each job's destinations whose last push failed, at the end)}.

    A run folder that holds training of another recipe (another data_dir, backbone, size, folds...),
    or that was trained on another folds.csv or other tables than the recipe's files now (its
    data.json: ``GridJob.data_changed``), stops the grid before anything runs, naming each setting or
    file that differs; ``force`` retrains those
    runs from scratch (the others are still skipped or resumed): their folders are deleted here, once,
    before any job starts (``delete_runs``), and no job's command forces, so a retried attempt (Ray)
    resumes what the failed one saved. ``backend="ray"``: the cluster and
    what each run asks of it come in ``ray`` (``lib.ops.ray_grid.RayOptions``: ``address``,
    ``cpus_per_run``, ``gpus_per_run``, custom ``resources``, ``max_retries``; default ``RayOptions()``).
    ``full``: the recipes' full-data refits instead of their folds (``make_jobs``)."""
    grid_jobs = make_jobs(params_files, folds, runs_dir, overrides, full)
    changed = {c.run_name: c.changed() for c in grid_jobs}
    changed = {k: v for k, v in changed.items() if v}
    if changed and not force:
        lines = [f"  {name}: " + ", ".join(f"{k} {b!r} recorded, {a!r} asked" for k, (a, b) in diff.items())
                 for name, diff in changed.items()]
        raise ValueError(f"{len(changed)} run folder(s) in {resolve(runs_dir)} hold runs of another recipe:\n"
                         + "\n".join(lines) + "\nretrain them with --force (force=True), or give this grid "
                         "another --runs-dir")
    data = {c.run_name: c.data_changed() for c in grid_jobs if c.run_name not in changed and not c.cfg.force}
    stale = {k: v for k, v in data.items() if v}
    if stale and not force:
        lines = [f"  {name}: " + "; ".join(why) for name, why in stale.items()]
        raise ValueError(f"{len(stale)} run folder(s) in {resolve(runs_dir)} were trained on other data than now:\n"
                         + "\n".join(lines) + "\nretrain them with --force (force=True), or put back the files "
                         "they were trained on")
    unchecked = sorted(k for k, v in data.items() if v is None)
    if unchecked:
        print(f"grid: {len(unchecked)} run(s) made before data.json record no folds or tables, so a change of "
              f"those is not checked: {', '.join(unchecked)}", flush=True)
    # the runs to train again from scratch: another recipe or data with force, or every one the recipe forces
    retrain = {c.run_name for c in grid_jobs if c.run_name in changed | stale or c.cfg.force}
    grid_jobs = [dataclasses.replace(c, cfg=c.cfg.replace(force=False)) for c in grid_jobs]
    resolve(runs_dir).mkdir(parents=True, exist_ok=True)
    deleted = delete_runs([c for c in grid_jobs if c.run_name in retrain])
    todo = [c for c in grid_jobs if c.run_name in retrain or not c.complete or c.push_due]
    repush = {c.run_name for c in todo if c.run_name not in retrain and c.complete}
    result = {"done": [], "pushed": [], "skipped": [c.run_name for c in grid_jobs if c not in todo], "failed": [],
              "backup_failed": []}
    again = f" ({len(repush)} complete, to push to sync_to again)" if repush else ""
    gone = f", {len(deleted)} deleted to train again (--force)" if deleted else ""
    print(f"grid: {len(grid_jobs)} runs, {len(result['skipped'])} already complete, {len(todo)} to run{again}{gone} "
          f"({backend}, jobs={jobs if backend == 'local' else 'ray'})", flush=True)
    if not todo:
        return _with_backups(result, grid_jobs)
    check_kernel()
    bar = tqdm(total=len(todo), desc="grid", mininterval=1)
    grid_clock = GridClock(todo, jobs if backend == "local" else 1)

    def record(job: GridJob, code: int, tail: str):
        grid_clock.finished(job.run_name)
        if code == 0 and job.complete:
            result["pushed" if job.run_name in repush else "done"].append(job.run_name)
        else:
            result["failed"].append((job.run_name, str(job.notebook), _error_of(job.notebook, tail)))
            bar.write(f"FAILED {job.run_name}: {result['failed'][-1][2]}")
        bar.update(1)

    if backend == "local":
        gpus = _gpu_count()
        slots: queue.Queue = queue.Queue()
        for k in range(max(1, jobs)):
            slots.put(k)

        def work(job: GridJob):
            slot = slots.get()
            try:
                env = {**run_env(), **job.secret_env, **({"CUDA_VISIBLE_DEVICES": str(slot % gpus)} if gpus else {})}
                return run_command(job.command(notebook), job.log, env, str(repo_root()),
                                   partial(grid_clock.line, job.run_name))
            finally:
                slots.put(slot)

        with ThreadPoolExecutor(max(1, jobs)) as ex:
            futures = {ex.submit(work, c): c for c in todo}
            for f in as_completed(futures):
                record(futures[f], *f.result())
    elif backend == "ray":
        run_on_ray(todo, notebook, record, ray)
    else:
        raise ValueError(f"backend {backend!r}: choose local or ray")
    bar.close()
    return _with_backups(result, grid_jobs)


def delete_runs(grid_jobs: list[GridJob]) -> list[str]:
    """Delete the run folders of ``grid_jobs`` (``--force``), once, here in the driver, before any job starts:
    every lock is taken first (``lib.core.runlock``: a run another process is training stops the grid
    before anything is deleted), then the folders go. Returns the names of the runs deleted."""
    with ExitStack() as held:
        locks = [held.enter_context(lock_run(c.run_dir)) for c in grid_jobs]
        return [c.run_name for c, lock in zip(grid_jobs, locks) if delete_run(c.run_dir, lock)]


def _with_backups(result: dict, grid_jobs: list[GridJob]) -> dict:
    """``result`` with "backup_failed": (run, url, error) of every failed last push of the jobs' runs."""
    result["backup_failed"] = [(j.run_name, url, err) for j in grid_jobs
                               for url, err in failed_pushes(j.run_dir).items()]
    return result
