"""Run 02_train for every backbone x fold through papermill, locally or on a Ray cluster.

    python -m lib.grid --params params/convnext_tiny.yaml params/effnetv2_s.yaml --folds 0-4
    python -m lib.grid --params params/demo/*.yaml --folds 0-2 --jobs 2 -p data_dir data/fmnist
    python -m lib.grid --params params/*.yaml --folds 0-4 --backend ray --address auto

A cell's run name is ``<params file stem>_f<fold>``: its executed notebook is ``runs/<run>.ipynb``
and its artifacts ``runs/<run>/``. Completed runs are skipped; an interrupted one resumes (02_train
does that); a failed one does not stop the others and is reported at the end with its notebook and
error. With ``--jobs N`` on a machine with GPUs, each job is pinned to one GPU through
``CUDA_VISIBLE_DEVICES``. The Ray backend sends each cell as a task asking for one GPU (one CPU
where the cluster has none); ``runs/`` and the data must be on a filesystem all nodes share.
"""
from __future__ import annotations

import argparse
import os
import queue
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import yaml
from tqdm import tqdm

from .paths import repo_root, resolve
from .runs import run_complete

NOTEBOOK = "notebooks/02_train.ipynb"


@dataclass
class Cell:
    """One backbone x fold: the papermill command that runs it and where its outputs go."""
    params_file: Path
    fold: int
    run_name: str
    runs_dir: Path

    @property
    def notebook(self) -> Path:
        return self.runs_dir / f"{self.run_name}.ipynb"

    @property
    def complete(self) -> bool:
        return run_complete(self.runs_dir / self.run_name)

    def command(self, notebook: str = NOTEBOOK, extra: list[tuple[str, str]] = ()) -> list[str]:
        cmd = [sys.executable, "-m", "papermill", str(resolve(notebook)), str(self.notebook),
               "-f", str(self.params_file), "-p", "fold", str(self.fold), "-p", "run_name", self.run_name,
               "-p", "runs_dir", str(self.runs_dir), "-p", "progress", "False", "--cwd", str(repo_root())]
        for k, v in extra:
            cmd += ["-p", k, v]
        return cmd


def parse_folds(spec: str) -> list[int]:
    """"0-4" -> [0..4], "0,2,3" -> [0, 2, 3]."""
    out = []
    for part in str(spec).split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return out


def make_cells(params_files, folds, runs_dir="runs") -> list[Cell]:
    cells = []
    for pf in params_files:
        pf = resolve(pf)
        if not pf.exists():
            raise FileNotFoundError(f"{pf}: no such params file")
        yaml.safe_load(pf.read_text(encoding="utf-8"))  # fails early and clearly on broken YAML syntax
        cells += [Cell(pf, f, f"{pf.stem}_f{f}", resolve(runs_dir)) for f in folds]
    return cells


def _gpu_count() -> int:
    try:
        import torch
        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001
        return 0


def run_cell(cmd: list[str], env_extra: dict | None = None, cwd: str | None = None) -> tuple[int, str]:
    """Run one papermill command; returns (exit code, the last lines of its output)."""
    env = {**os.environ, **(env_extra or {}), "PYTHONUNBUFFERED": "1"}
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    return p.returncode, "\n".join((p.stdout + p.stderr).strip().splitlines()[-15:])


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
    lines = [l for l in tail.splitlines() if l.strip()]
    return lines[-1] if lines else "unknown error"


def run_grid(params_files, folds, runs_dir="runs", jobs: int = 1, backend: str = "local",
             address: str | None = None, extra: list[tuple[str, str]] = (), notebook: str = NOTEBOOK) -> dict:
    """Run every cell not yet complete; returns {"done": [...], "skipped": [...], "failed": [(run, nb, error)]}."""
    cells = make_cells(params_files, folds, runs_dir)
    resolve(runs_dir).mkdir(parents=True, exist_ok=True)
    todo = [c for c in cells if not c.complete]
    result = {"done": [], "skipped": [c.run_name for c in cells if c.complete], "failed": []}
    print(f"grid: {len(cells)} runs, {len(result['skipped'])} already complete, {len(todo)} to run "
          f"({backend}, jobs={jobs if backend == 'local' else 'ray'})", flush=True)
    if not todo:
        return result
    bar = tqdm(total=len(todo), desc="grid", mininterval=1)

    def record(cell: Cell, code: int, tail: str):
        if code == 0 and cell.complete:
            result["done"].append(cell.run_name)
        else:
            result["failed"].append((cell.run_name, str(cell.notebook), _error_of(cell.notebook, tail)))
            bar.write(f"FAILED {cell.run_name}: {result['failed'][-1][2]}")
        bar.update(1)

    if backend == "local":
        gpus = _gpu_count()
        slots: queue.Queue = queue.Queue()
        for k in range(max(1, jobs)):
            slots.put(k)

        def work(cell: Cell):
            slot = slots.get()
            try:
                env = {"CUDA_VISIBLE_DEVICES": str(slot % gpus)} if gpus else {}
                return run_cell(cell.command(notebook, extra), env, str(repo_root()))
            finally:
                slots.put(slot)

        with ThreadPoolExecutor(max(1, jobs)) as ex:
            futures = {ex.submit(work, c): c for c in todo}
            for f in as_completed(futures):
                record(futures[f], *f.result())
    elif backend == "ray":
        import ray

        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        want_gpu = ray.cluster_resources().get("GPU", 0) > 0
        task = ray.remote(num_gpus=1 if want_gpu else 0, num_cpus=0 if want_gpu else 1)(run_cell)
        refs = {task.remote(c.command(notebook, extra), None, str(repo_root())): c for c in todo}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            record(refs[ready[0]], *ray.get(ready[0]))
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
    a = ap.parse_args(argv)
    res = run_grid(a.params, parse_folds(a.folds), a.runs_dir, a.jobs, a.backend, a.address,
                   [tuple(p) for p in a.parameter], a.notebook)
    print(f"grid: {len(res['done'])} trained, {len(res['skipped'])} skipped (complete), {len(res['failed'])} failed")
    for name, nb, err in res["failed"]:
        print(f"  FAILED {name}: {err}\n         notebook: {nb}")
    return 1 if res["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
