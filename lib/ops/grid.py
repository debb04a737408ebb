"""Run 02_train for every backbone x fold through papermill, locally or on a Ray cluster.

    python -m lib.ops.grid --params params/convnext_tiny.yaml params/efficientnetv2_s.yaml --folds 0-4
    python -m lib.ops.grid --params params/demo/*.yaml --folds 0-2 --jobs 2 -p data_dir data/fmnist
    python -m lib.ops.grid --params params/*.yaml --folds 0-4 --backend ray --address auto
    python -m lib.ops.grid --params params/demo/*.yaml --full   # then each recipe's full-data refit (lib.predict.refit)

A job's run name is ``<params file stem>_f<fold>``: its executed notebook is ``runs/<run>.ipynb``
and its artifacts ``runs/<run>/``. Every recipe (with the ``-p`` overrides) is checked before
anything runs. Completed runs are skipped while their recorded recipe is the one asked for (another
one stops the grid, naming what differs: ``--force`` retrains them); an interrupted one resumes
(02_train does that); a failed one does not stop the others and is reported at the end with its
notebook and error. A run trained with ``sync_to`` fails when its last push does, and a complete
one whose last push failed runs again to push it (no retraining); every run's failed push (its
``backup.json``, ``lib.core.backup``) is listed at the end. With ``--jobs N`` on a machine with GPUs,
each job is pinned to one GPU through ``CUDA_VISIBLE_DEVICES``. The Ray backend sends each job as a
task asking for one GPU (one CPU where the cluster has none); ``runs/`` and the data must be on a
filesystem all nodes share.
Every notebook runs on the project's Jupyter kernel, ``foldbook`` (``make env`` registers it), not
on whatever kernel a notebook was last saved with.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import queue
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from functools import partial

from tqdm import tqdm

from lib.core.backup import failed_pushes
from lib.core.paths import repo_root, resolve
from lib.ops.jobs import (
    NOTEBOOK,
    GridClock,
    GridJob,
    _error_of,
    _gpu_count,
    check_kernel,
    make_jobs,
    parse_folds,
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
    file that differs; ``force`` retrains those runs from scratch (the others are still skipped or
    resumed). ``backend="ray"``: the cluster and what each run asks of it come in ``ray``
    (``lib.ops.ray_grid.RayOptions``: ``address``, ``cpus_per_run``, ``gpus_per_run``, custom
    ``resources``, ``max_retries``; default ``RayOptions()``).
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
    data = {c.run_name: c.data_changed() for c in grid_jobs if c.run_name not in changed}
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
    grid_jobs = [dataclasses.replace(c, cfg=c.cfg.replace(force=True)) if c.run_name in changed | stale else c
                 for c in grid_jobs]
    resolve(runs_dir).mkdir(parents=True, exist_ok=True)
    todo = [c for c in grid_jobs if c.cfg.force or not c.complete or c.push_due]
    repush = {c.run_name for c in todo if not c.cfg.force and c.complete}
    result = {"done": [], "pushed": [], "skipped": [c.run_name for c in grid_jobs if c not in todo], "failed": [],
              "backup_failed": []}
    again = f" ({len(repush)} complete, to push to sync_to again)" if repush else ""
    print(f"grid: {len(grid_jobs)} runs, {len(result['skipped'])} already complete, {len(todo)} to run{again} "
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
                env = {**run_env(), **({"CUDA_VISIBLE_DEVICES": str(slot % gpus)} if gpus else {})}
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


def _with_backups(result: dict, grid_jobs: list[GridJob]) -> dict:
    """``result`` with "backup_failed": (run, url, error) of every failed last push of the jobs' runs."""
    result["backup_failed"] = [(j.run_name, url, err) for j in grid_jobs
                               for url, err in failed_pushes(j.run_dir).items()]
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Run 02_train for every params file x fold (papermill).")
    ap.add_argument("--params", nargs="+", required=True, help="params/*.yaml, one per backbone recipe")
    ap.add_argument("--folds", default="0-4", help='e.g. "0-4" or "0,2"')
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (local backend)")
    ap.add_argument("--backend", default="local", choices=["local", "ray"])
    ap.add_argument("--address", default=None, help="Ray cluster address (e.g. auto or ray://host:10001)")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="override a notebook parameter for every run, e.g. -p data_dir data/mycomp")
    ap.add_argument("--notebook", default=NOTEBOOK)
    ap.add_argument("--force", action="store_true", help="retrain runs recorded with another recipe or data")
    ap.add_argument("--full", action="store_true", help="full-data refits <stem>_full (after the folds), not folds")
    ap.add_argument("--cpus-per-run", type=float, default=1, help="Ray: CPUs each run asks for (its loader workers)")
    ap.add_argument("--gpus-per-run", type=float, default=0, help="Ray: GPUs each run asks for")
    ap.add_argument("--resources", type=json.loads, default=None,
                    help="Ray: custom resources per run as JSON, e.g. {\"a100\": 1}")
    ap.add_argument("--max-retries", type=int, default=3, help="Ray: retries of a run whose worker or node died")
    a = ap.parse_args(argv)
    try:
        res = run_grid(a.params, parse_folds(a.folds), a.runs_dir, a.jobs, a.backend, overrides=dict(a.parameter),
                       notebook=a.notebook, force=a.force, full=a.full,
                       ray=RayOptions(a.address, a.cpus_per_run, a.gpus_per_run, a.resources, a.max_retries))
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"grid: nothing was run.\n{e}", file=sys.stderr)
        return 2
    pushed, backups = res.get("pushed", []), res.get("backup_failed", [])
    print(f"grid: {len(res['done'])} trained, " + (f"{len(pushed)} pushed again, " if pushed else "")
          + f"{len(res['skipped'])} skipped (complete), {len(res['failed'])} failed, {len(backups)} backup(s) failed")
    for name, nb, err in res["failed"]:
        print(f"  FAILED {name}: {err}\n         notebook: {nb}")
    for name, url, err in backups:
        print(f"  BACKUP FAILED {name} -> {url}: {err}")
    return 1 if res["failed"] or backups else 0


if __name__ == "__main__":
    raise SystemExit(main())
