"""Run 02_train for every backbone x fold through papermill, locally or on a Ray cluster.

    python -m lib.grid --params params/convnext_tiny.yaml params/efficientnetv2_s.yaml --folds 0-4
    python -m lib.grid --params params/demo/*.yaml --folds 0-2 --jobs 2 -p data_dir data/fmnist
    python -m lib.grid --params params/*.yaml --folds 0-4 --backend ray --address auto
    python -m lib.grid --params params/demo/*.yaml --full      # then each recipe's full-data refit (lib.refit)

A job's run name is ``<params file stem>_f<fold>``: its executed notebook is ``runs/<run>.ipynb``
and its artifacts ``runs/<run>/``. Every recipe (with the ``-p`` overrides) is checked before
anything runs. Completed runs are skipped while their recorded recipe is the one asked for (another
one stops the grid, naming what differs: ``--force`` retrains them); an interrupted one resumes
(02_train does that); a failed one does not stop the others and is reported at the end with its
notebook and error. With ``--jobs N`` on a machine with GPUs, each job is pinned to one GPU through
``CUDA_VISIBLE_DEVICES``. The Ray backend sends each job as a task asking for one GPU (one CPU
where the cluster has none); ``runs/`` and the data must be on a filesystem all nodes share.
Every notebook runs on the project's Jupyter kernel, ``foldbook`` (``make env`` registers it), not
on whatever kernel a notebook was last saved with.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import queue
import re
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import yaml
from tqdm import tqdm

from .config import TrainConfig
from .io import clock
from .paths import repo_root, resolve
from .runs import recorded_config, run_complete

NOTEBOOK = "notebooks/02_train.ipynb"
KERNEL = "foldbook"  # the project's kernel: ``make env`` registers it, the notebooks declare it


def check_kernel(name: str = KERNEL) -> None:
    """Raise, saying how to register it, when this environment's Jupyter has no kernel ``name``."""
    from jupyter_client.kernelspec import KernelSpecManager

    if name not in KernelSpecManager().find_kernel_specs():
        raise RuntimeError(f"no Jupyter kernel named {name!r} here (see `jupyter kernelspec list`); `make env` "
                           f"registers it, or: {sys.executable} -m ipykernel install --sys-prefix --name {name}")


@dataclass
class GridJob:
    """One backbone x fold: its recipe (the params file with the grid's overrides, checked), the
    papermill command that runs it, and where its outputs go."""
    params_file: Path
    cfg: TrainConfig
    overrides: dict  # the grid's settings for every job (typed), passed to papermill as YAML

    @property
    def run_name(self) -> str:
        return self.cfg.name

    @property
    def run_dir(self) -> Path:
        return resolve(self.cfg.runs_dir) / self.cfg.name

    @property
    def notebook(self) -> Path:
        return resolve(self.cfg.runs_dir) / f"{self.cfg.name}.ipynb"

    @property
    def log(self) -> Path:
        """Everything the run printed, streamed as it runs."""
        return resolve(self.cfg.runs_dir) / f"{self.cfg.name}.log"

    @property
    def complete(self) -> bool:
        return run_complete(self.run_dir)

    def changed(self) -> dict:
        """{setting: (now, recorded)} when the run folder holds training of another recipe, else {}."""
        old = recorded_config(self.run_dir)
        if old is None or not ((self.run_dir / "state.pt").exists() or self.complete):
            return {}
        return self.cfg.differences(old)

    def command(self, notebook: str = NOTEBOOK, root: Path | None = None) -> list[str]:
        """The papermill command, for this interpreter and a copy of the repo at ``root`` (default this
        one; on a Ray node, the copy Ray unpacked): paths inside the repo are taken relative to it."""
        root = Path(root or repo_root())

        def here(path) -> str:
            path = resolve(path)
            return str(root / path.relative_to(repo_root())) if path.is_relative_to(repo_root()) else str(path)
        cmd = [sys.executable, "-m", "papermill", here(notebook), str(self.notebook),
               "-f", here(self.params_file), "-p", "fold", str(self.cfg.fold), "-p", "run_name", self.cfg.name,
               "-p", "runs_dir", str(resolve(self.cfg.runs_dir)), "-p", "progress", "False", "--cwd", str(root),
               "-k", KERNEL, "--log-output", "--no-progress-bar"]
        if self.overrides:
            cmd += ["-y", yaml.safe_dump(self.overrides, default_flow_style=True, allow_unicode=True)]
        if self.cfg.force:
            cmd += ["-p", "force", "True"]
        return cmd


def parse_folds(spec: str) -> list[int]:
    """"0-4" -> [0..4], "0,2,3" -> [0, 2, 3]."""
    out = []
    for part in str(spec).split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return out


def parse_value(text: str):
    """A ``-p`` value as papermill reads it: True/False/None, an int, a float, else the text."""
    consts = {"True": True, "False": False, "None": None}
    if text in consts:
        return consts[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def make_jobs(params_files, folds, runs_dir="runs", overrides: dict | None = None, full: bool = False) -> list[GridJob]:
    """A job per params file x fold, each recipe checked (names, choices, files) before anything runs. With
    ``full``, one full-data refit per params file instead (``<stem>_full``, ``lib.refit``), for the epochs
    its completed fold runs chose (``cv_epochs``) unless ``-p epochs`` says otherwise."""
    from .refit import cv_epochs
    overrides = {k: parse_value(v) if isinstance(v, str) else v for k, v in (overrides or {}).items()}
    jobs = []
    for pf in params_files:
        pf = resolve(pf)
        extra = {"full_data": True, "epochs": overrides.get("epochs") or cv_epochs(runs_dir, pf.stem)} if full else {}
        for f in [0] if full else folds:
            cfg = TrainConfig.from_yaml(pf, **{**overrides, **extra, "fold": f, "runs_dir": str(runs_dir),
                                               "run_name": f"{pf.stem}_full" if full else f"{pf.stem}_f{f}",
                                               "progress": False})
            missing = cfg.missing_files()
            if missing:
                raise FileNotFoundError(f"{pf}: " + "; ".join(missing))
            jobs.append(GridJob(pf, cfg, {**overrides, **extra}))
    return jobs


def _gpu_count() -> int:
    try:
        import torch
        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001
        return 0


def run_command(cmd: list[str], log: Path, env_extra: dict | None = None, cwd: str | None = None,
                on_line=None) -> tuple[int, str]:
    """Run one papermill command, its output streamed line by line to ``log`` (``tail -f`` it), each
    line followed by what ``on_line(line)`` returns, if anything (the grid's ETA after an epoch line);
    returns (exit code, its last lines). On Linux the command dies with the process that started it
    (a lost Ray worker leaves no orphan training on)."""
    env = {**os.environ, **(env_extra or {}), "PYTHONUNBUFFERED": "1"}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", bufsize=1, preexec_fn=_die_with_parent)
        for line in proc.stdout:
            extra = on_line(line) if on_line else None
            out.write(line + (f"{extra}\n" if extra else ""))
            out.flush()
        code = proc.wait()
    return code, "\n".join(log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:])


EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+)\s.*?([\d.]+)s  eta ")


class GridClock:
    """The grid's ETA from its runs' epoch lines (``lib.callbacks.RunRecorder``): epochs left over
    all runs x the median epoch's seconds so far / runs at once. Shared by the grid's threads."""

    def __init__(self, jobs: list[GridJob], parallel: int = 1):
        self.total = {j.run_name: j.cfg.epochs for j in jobs}
        self.done = dict.fromkeys(self.total, 0)
        self.seconds: list[float] = []
        self.parallel, self.lock = max(1, parallel), threading.Lock()

    def finished(self, run: str) -> None:
        with self.lock:
            self.done[run] = self.total[run]  # early stopping ends a run before its last epoch

    def line(self, run: str, text: str) -> str | None:
        """A grid line for a run's epoch line, else None."""
        m = EPOCH_LINE.search(text)
        if not m:
            return None
        with self.lock:
            self.done[run], self.total[run] = int(m[1]), int(m[2])
            self.seconds.append(float(m[3]))
            left = sum(self.total.values()) - sum(self.done.values())
            runs = sum(self.done[r] >= self.total[r] for r in self.total)
            eta = left * statistics.median(self.seconds) / min(self.parallel, max(1, len(self.total) - runs))
            return (f"grid: {sum(self.done.values())}/{sum(self.total.values())} epochs, {runs}/{len(self.total)} "
                    f"runs trained, eta {clock(eta)} (at {time.strftime('%H:%M', time.localtime(time.time() + eta))})")


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        import ctypes
        import signal
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _error_of(nb_path: Path, tail: str) -> str:
    """The error a failed notebook recorded (ename: evalue), else the command's last output line."""
    try:
        import nbformat
        nb = nbformat.read(nb_path, as_version=4)
        for c in nb.cells:
            for o in c.get("outputs", []):
                if o.get("output_type") == "error":
                    return f"{o['ename']}: {o['evalue']}"
    except Exception:  # noqa: BLE001 - no notebook written: fall back to the output
        pass
    lines = [line for line in tail.splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


def run_grid(params_files, folds, runs_dir="runs", jobs: int = 1, backend: str = "local",
             address: str | None = None, overrides: dict | None = None, notebook: str = NOTEBOOK,
             force: bool = False, cpus_per_run: float = 1, gpus_per_run: float = 0, resources=None,
             max_retries: int = 3, full: bool = False) -> dict:
    """Run every job not yet complete; returns {"done": [...], "skipped": [...], "failed": [(run, nb, error)]}.

    A run folder that holds training of another recipe (another data_dir, backbone, size, folds...)
    stops the grid before anything runs, naming each setting that differs; ``force`` retrains those
    runs from scratch (the others are still skipped or resumed). ``backend="ray"``: see
    ``lib.ray_grid`` (``cpus_per_run``, ``gpus_per_run``, custom ``resources``, ``max_retries``).
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
    grid_jobs = [dataclasses.replace(c, cfg=c.cfg.replace(force=True)) if c.run_name in changed else c
                 for c in grid_jobs]
    resolve(runs_dir).mkdir(parents=True, exist_ok=True)
    todo = [c for c in grid_jobs if c.cfg.force or not c.complete]
    result = {"done": [], "skipped": [c.run_name for c in grid_jobs if c not in todo], "failed": []}
    print(f"grid: {len(grid_jobs)} runs, {len(result['skipped'])} already complete, {len(todo)} to run "
          f"({backend}, jobs={jobs if backend == 'local' else 'ray'})", flush=True)
    if not todo:
        return result
    check_kernel()
    bar = tqdm(total=len(todo), desc="grid", mininterval=1)
    grid_clock = GridClock(todo, jobs if backend == "local" else 1)

    def record(job: GridJob, code: int, tail: str):
        grid_clock.finished(job.run_name)
        if code == 0 and job.complete:
            result["done"].append(job.run_name)
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
                env = {"CUDA_VISIBLE_DEVICES": str(slot % gpus)} if gpus else {}
                return run_command(job.command(notebook), job.log, env, str(repo_root()),
                                   partial(grid_clock.line, job.run_name))
            finally:
                slots.put(slot)

        with ThreadPoolExecutor(max(1, jobs)) as ex:
            futures = {ex.submit(work, c): c for c in todo}
            for f in as_completed(futures):
                record(futures[f], *f.result())
    elif backend == "ray":
        from .ray_grid import run_on_ray
        run_on_ray(todo, notebook, record, address, cpus_per_run, gpus_per_run, resources, max_retries)
    else:
        raise ValueError(f"backend {backend!r}: choose local or ray")
    bar.close()
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
    ap.add_argument("--force", action="store_true", help="retrain runs recorded with another recipe")
    ap.add_argument("--full", action="store_true", help="full-data refits <stem>_full (after the folds), not folds")
    ap.add_argument("--cpus-per-run", type=float, default=1, help="Ray: CPUs each run asks for (its loader workers)")
    ap.add_argument("--gpus-per-run", type=float, default=0, help="Ray: GPUs each run asks for")
    ap.add_argument("--resources", type=json.loads, default=None,
                    help="Ray: custom resources per run as JSON, e.g. {\"a100\": 1}")
    ap.add_argument("--max-retries", type=int, default=3, help="Ray: retries of a run whose worker or node died")
    a = ap.parse_args(argv)
    try:
        res = run_grid(a.params, parse_folds(a.folds), a.runs_dir, a.jobs, a.backend, a.address,
                       dict(a.parameter), a.notebook, a.force, a.cpus_per_run, a.gpus_per_run, a.resources,
                       a.max_retries, a.full)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"grid: nothing was run.\n{e}", file=sys.stderr)
        return 2
    print(f"grid: {len(res['done'])} trained, {len(res['skipped'])} skipped (complete), {len(res['failed'])} failed")
    for name, nb, err in res["failed"]:
        print(f"  FAILED {name}: {err}\n         notebook: {nb}")
    return 1 if res["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
