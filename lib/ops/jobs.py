"""One job of the grid: a recipe x fold, the papermill command that runs it, its streamed log and ETA.

    jobs = make_jobs(["params/demo/resnet.yaml"], [0, 1, 2], "runs")   # each recipe checked first
    code, tail = run_command(jobs[0].command(), jobs[0].log, jobs[0].secret_env)   # `tail -f runs/<run>.log`

A URL setting with credentials (``tracker_uri: http://user:pass@host``, ``sync_to``) never becomes a
papermill parameter, which the executed notebook would keep: the command passes it redacted
(``http://***@host``) and the job's process gets the full URL in ``$FOLDBOOK_TRACKER_URI`` /
``$FOLDBOOK_SYNC_TO`` (``secret_env``), from which 02_train's recipe takes it back
(``TrainConfig.from_notebook``). Each attempt at a job appends to its log under a ``--- attempt n ---``
line: a retry (Ray's, or the next grid) keeps what the failed attempt printed.
"""
from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import nbformat
import torch
import yaml
from jupyter_client.kernelspec import KernelSpecManager

from lib.core.backup import failed_pushes
from lib.core.config import SECRET_ENV, TrainConfig
from lib.core.io import clock
from lib.core.paths import has_credentials, redact_url, repo_root, resolve
from lib.core.rundir import RunDir, cv_epochs, data_changes, recipe_changes, run_complete
from lib.data.folds import data_record

NOTEBOOK = "notebooks/02_train.ipynb"
KERNEL = "foldbook"  # the project's kernel: ``make env`` registers it, the notebooks declare it
INDUCTOR_CACHE = ".cache/torchinductor"  # torch.compile's on-disk caches, under the repo (``run_env``)
ATTEMPT = "--- attempt "  # how each attempt's output starts in a job's log (``run_command``)


def check_kernel(name: str = KERNEL) -> None:
    """Raise, saying how to register it, when this environment's Jupyter has no kernel ``name``."""

    if name not in KernelSpecManager().find_kernel_specs():
        raise RuntimeError(f"no Jupyter kernel named {name!r} here (see `jupyter kernelspec list`); `make env` "
                           f"registers it, or: {sys.executable} -m ipykernel install --sys-prefix --name {name}")


@dataclass
class GridJob:
    """One backbone x fold: its recipe (the params file with the grid's overrides, checked), the
    papermill command that runs it, and where its outputs go."""
    params_file: Path
    cfg: TrainConfig
    overrides: dict  # the grid's settings for every job (typed), passed to papermill as YAML; URLs redacted

    def __post_init__(self):
        # a URL with credentials goes to papermill redacted (also over the params file's), whole in secret_env
        self.overrides = {**self.overrides, **{k: redact_url(v) for k, v in self._secrets().items()}}

    def _secrets(self) -> dict:
        return {k: getattr(self.cfg, k) for k in SECRET_ENV if has_credentials(getattr(self.cfg, k))}

    @property
    def secret_env(self) -> dict:
        """What the job's process gets added to its environment: the full URL of each URL setting with
        credentials, in its ``SECRET_ENV`` variable (the command passes it redacted)."""
        return {SECRET_ENV[k]: v for k, v in self._secrets().items()}

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

    @property
    def push_due(self) -> bool:
        """Complete, but its last push to the recipe's ``sync_to`` failed or was refused: the job runs
        again to push it (nothing is retrained: ``lib.train.loop.write_predictions``)."""
        return bool(self.cfg.sync_to) and self.complete and bool(failed_pushes(self.run_dir, self.cfg.sync_to))

    def changed(self) -> dict:
        """{setting: (now, recorded)} when the run folder holds training of another recipe, else {}."""
        return recipe_changes(self.run_dir, self.cfg)

    def data_changed(self) -> list[str] | None:
        """What changed in the folds.csv and tables the run folder was trained on, when 02_train would reuse
        it complete or resume it (``lib.core.rundir.data_changes``, one line per file): [] when nothing did or
        nothing is reused, None when its run recorded nothing (made before data.json existed)."""
        if not (self.complete or (self.cfg.resume and RunDir(self.run_dir).state.exists())):
            return []
        return data_changes(self.run_dir, data_record(self.cfg))

    def command(self, notebook: str = NOTEBOOK, root: Path | None = None) -> list[str]:
        """The papermill command, for this interpreter and a copy of the repo at ``root`` (default this
        one; on a Ray node, the copy Ray unpacked): paths inside the repo are taken relative to it.
        It never forces: ``lib.ops.grid`` deletes the runs it retrains once, before launching any."""
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
        # never force (-p wins over -f and -y): the grid deleted what it retrains before launching, and a
        # retried attempt (Ray) must resume the epochs the failed one saved, not delete them
        return cmd + ["-p", "force", "False"]


def make_jobs(params_files, folds, runs_dir="runs", overrides: dict | None = None, full: bool = False) -> list[GridJob]:
    """A job per params file x fold, each recipe checked (names, choices, files) before anything runs. With
    ``full``, one full-data refit per params file instead (``<stem>_full``, ``lib.predict.refit``), for the epochs
    its completed fold runs chose (``cv_epochs``) unless ``overrides`` give ``epochs``. ``overrides``: settings for
    every job, typed (the command line reads ``-p`` text with ``parse_value``, ``-y`` as YAML). Two params files
    that give one run name (one stem in two folders, or a file listed twice) are refused, naming both:
    their jobs would train into one run folder."""
    overrides = dict(overrides or {})
    stems: dict[str, Path] = {}
    for pf in map(resolve, params_files):
        if pf.stem in stems:
            same = "is listed twice" if pf == stems[pf.stem] else f"and {stems[pf.stem]} have one stem"
            raise ValueError(f"{pf} {same}: a run is named <params file stem>_f<fold>, so their runs would "
                             f"share the folders {resolve(runs_dir) / pf.stem}_*; rename one file, or give "
                             "each its own grid and --runs-dir")
        stems[pf.stem] = pf
    jobs = []
    for pf in params_files:
        pf = resolve(pf)
        extra = {"full_data": True, "epochs": overrides.get("epochs") or cv_epochs(runs_dir, pf.stem)} if full else {}
        for f in [0] if full else folds:
            cfg = TrainConfig.from_yaml(pf, **{**overrides, **extra, "fold": f, "runs_dir": str(runs_dir),
                                               "run_name": f"{pf.stem}_full" if full else f"{pf.stem}_f{f}",
                                               "progress": False}).with_credentials()
            missing = cfg.missing_files()
            if missing:
                raise FileNotFoundError(f"{pf}: " + "; ".join(missing))
            jobs.append(GridJob(pf, cfg, {**overrides, **extra}))
    return jobs


def run_env(root: Path | None = None) -> dict:
    """What a grid run's process gets added to its environment (``run_command``'s ``env_extra``):
    ``TORCHINDUCTOR_CACHE_DIR`` = ``<root>/.cache/torchinductor`` (``root``: this repo, or the copy a
    Ray node unpacked), so that every run of the grid on a machine shares torch.compile's caches
    (``lib.model.optim.compile_model``) and only the first fold pays the compile; unless this process
    was started with its own ``TORCHINDUCTOR_CACHE_DIR``, which the run then inherits."""
    if "TORCHINDUCTOR_CACHE_DIR" in os.environ:
        return {}
    return {"TORCHINDUCTOR_CACHE_DIR": str(Path(root or repo_root()) / INDUCTOR_CACHE)}


def _gpu_count() -> int:
    try:
        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001
        return 0


def run_command(cmd: list[str], log: Path, env_extra: dict | None = None, cwd: str | None = None,
                on_line=None) -> tuple[int, str]:
    """Run one papermill command, its output streamed line by line to ``log`` (``tail -f`` it), each
    line followed by what ``on_line(line)`` returns, if anything (the grid's ETA after an epoch line);
    returns (exit code, the last lines of this attempt). The output is appended under a line
    ``--- attempt n (time, host) ---`` (n: the attempts the log holds, plus one), so a retried job keeps
    what its failed attempts printed. On Linux the command dies with the process that started it (a lost
    Ray worker leaves no orphan training on)."""
    env = {**os.environ, **(env_extra or {}), "PYTHONUNBUFFERED": "1"}
    log.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=15)
    n = 1 + attempts(log)
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"{ATTEMPT}{n} ({time.strftime('%Y-%m-%d %H:%M:%S')}, {socket.gethostname()}) ---\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", bufsize=1, preexec_fn=_die_with_parent)
        for line in proc.stdout:
            extra = on_line(line) if on_line else None
            text = line + (f"{extra}\n" if extra else "")
            out.write(text)
            out.flush()
            tail.extend(text.splitlines())
        code = proc.wait()
    return code, "\n".join(tail).strip()


def attempts(log: Path) -> int:
    """How many attempts at a job its log holds (``run_command``'s ``--- attempt n`` lines); 0 without a log."""
    if not log.exists():
        return 0
    with open(log, encoding="utf-8", errors="replace") as f:
        return sum(line.startswith(ATTEMPT) for line in f)


EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+)\s.*?([\d.]+)s  eta ")


class GridClock:
    """The grid's ETA from its runs' epoch lines (``lib.train.callbacks.RunRecorder``): epochs left over
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
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _error_of(nb_path: Path, tail: str) -> str:
    """The error a failed notebook recorded (ename: evalue), else the command's last output line."""
    try:
        nb = nbformat.read(nb_path, as_version=4)
        for c in nb.cells:
            for o in c.get("outputs", []):
                if o.get("output_type") == "error":
                    return f"{o['ename']}: {o['evalue']}"
    except Exception:  # noqa: BLE001 - no notebook written: fall back to the output
        pass
    lines = [line for line in tail.splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"
