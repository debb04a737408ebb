"""A run's files on disk while it trains: the kept weights, the resumable state, and reading it back.

``model.safetensors`` holds the weights the run keeps (``best_epoch``: the last epoch's, or the best
so far by ``monitor``; EMA weights when EMA is on; the average at the end with ``lib.train.averaging``);
``state.pt`` the state after the last completed epoch (weights, optimizer, EMA, what the weight
average needs, per-epoch history), read back with ``torch.load(weights_only=True)``.
Both are written by one background thread, in order, atomically, so training does not wait for the
disk and an interrupted run leaves a consistent pair. With a ``sync_to`` URL the same thread then
mirrors the run folder there (``lib.core.backup.push_run``); a failed push is retried after the next
epoch, and the run fails when its last push does (``final_backup``). ``data.json``, written at setup,
records the folds and tables the run trains on: a resume or reuse on other ones is refused
(``check_same_data``).
"""
from __future__ import annotations

import copy
import json
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import safetensors.torch
import torch

from lib.core.backup import push_run
from lib.core.config import TrainConfig
from lib.core.io import atomic_path, write_json
from lib.core.paths import redact_text
from lib.core.rundir import RunDir, data_changes
from lib.data.folds import data_record
from lib.train.averaging import find_averager
from lib.train.callbacks import find_ema
from lib.train.distributed import unwrap


class CheckpointWriter:
    """Writes a run's checkpoints in a background thread, one after the other; with ``sync_to`` (an
    fsspec URL) each saved epoch is then backed up there. A failed backup is reported and retried
    after the next epoch: training goes on."""

    def __init__(self, run_dir: Path, sync_to: str | None = None):
        self.dir, self.pending, self.sync_to = Path(run_dir), [], sync_to
        self.pool = ThreadPoolExecutor(1)

    def flush(self) -> None:
        """Wait for the writes in flight; re-raise a failed one."""
        while self.pending:
            self.pending.pop(0).result()

    def close(self) -> None:
        self.flush()
        self.pool.shutdown()

    def save_weights(self, model: torch.nn.Module) -> None:
        """The weights the run keeps (this epoch's) to model.safetensors."""
        self.flush()
        sd = {k: v.contiguous() for k, v in snapshot(model.state_dict()).items()}

        def write():
            with atomic_path(self.dir / RunDir.WEIGHTS) as tmp:
                safetensors.torch.save_file(sd, str(tmp))
        self.pending.append(self.pool.submit(write))

    def save_state(self, learn, epoch: int, history: list) -> None:
        """The resumable state after ``epoch`` epochs; tensors are copied now, written later."""
        self.flush()
        state = {"epoch": epoch, "model": snapshot(unwrap(learn.model).state_dict()),
                 "opt": copy.deepcopy(learn.opt.state_dict()), "history": json.dumps(history)}
        ema = find_ema(learn)
        if ema:
            state["ema"] = snapshot(ema.model_ema.module.state_dict())
        averager = find_averager(learn)
        if averager:
            state["averaging"] = averager.state_dict()

        def write():
            with atomic_path(self.dir / RunDir.STATE) as tmp:
                torch.save(state, tmp)
            write_json(self.dir / RunDir.METRICS, {"complete": False, "epochs": history})
            if self.sync_to:
                backup(self.dir, self.sync_to, f"epoch {epoch}")
        self.pending.append(self.pool.submit(write))


def backup(run_dir: Path, url: str, when: str) -> bool:
    """Mirror the run folder to ``url`` (``lib.core.backup.push_run``); a failure is printed, not raised
    (the next epoch, the run's end or ``make sync`` pushes again). Returns whether it worked."""
    try:
        push_run(run_dir, url)
        return True
    except Exception as e:  # noqa: BLE001 - a network or permission error must not stop training
        print(redact_text(f"backup of {run_dir.name} to {url} failed after {when}: {type(e).__name__}: {e}; "
                          "training goes on and tries again"), file=sys.stderr, flush=True)
        return False


def final_backup(run_dir: Path, url: str) -> None:
    """Push a complete run to ``url`` (``lib.core.backup.push_run``); raise when that fails or is
    refused, so that the run (and the grid's job) fails rather than ends with its results on this
    machine only. Running it again pushes without retraining (``failed_pushes`` says it is due)."""
    try:
        push_run(run_dir, url)
    except Exception as e:  # noqa: BLE001 - whatever the destination raised, said once, with what to do
        raise RuntimeError(redact_text(
            f"{run_dir.name} is complete, but its backup to {url} failed: {type(e).__name__}: {e} (recorded in "
            f"{run_dir / RunDir.BACKUP}). Nothing is retrained: run it again (the same command, or the grid) or "
            f"`make sync SYNC_TO={url}` to push it")) from None


def record_data(run_dir: Path, cfg: TrainConfig) -> None:
    """data.json at a run's setup: its folds.csv and tables by hash (``lib.data.folds.data_record``)."""
    write_json(Path(run_dir) / RunDir.DATA, data_record(cfg))


def check_same_data(run_dir: Path, cfg: TrainConfig) -> None:
    """Raise ValueError, naming each changed file and what to do, when ``run_dir`` (to be resumed, or
    reused complete) recorded other folds or tables at setup than ``cfg``'s are now
    (``lib.core.rundir.data_changes``); a run made before data.json existed is only warned about."""
    changes = data_changes(run_dir, data_record(cfg))
    if changes is None:
        warnings.warn(f"{run_dir} records no {RunDir.DATA} (made by an older kit), so whether folds.csv or its "
                      "tables changed since it started cannot be checked; if they did, retrain it with force=True",
                      stacklevel=2)
    elif changes:
        raise ValueError(f"{run_dir} was trained on other data than it would go on with now: " + "; ".join(changes)
                         + ". Retrain it from scratch with force=True (papermill: -p force True; the grid: --force), "
                         "or put back the files it was trained on")


def load_state(learn, state_file: Path) -> tuple[int, list]:
    """Restore weights, optimizer and EMA from ``state.pt``; returns (epochs done, history)."""
    state = torch.load(state_file, map_location="cpu", weights_only=True)
    learn.model.load_state_dict(state["model"])
    learn.opt.load_state_dict(state["opt"])
    if "ema" in state:
        ema = find_ema(learn)
        ema.before_fit()
        ema.model_ema.module.load_state_dict(state["ema"])
    if "averaging" in state:
        find_averager(learn).load_state_dict(state["averaging"], learn.model)
    return int(state["epoch"]), json.loads(state["history"])


def snapshot(state_dict: dict) -> dict:
    """A copy of a state dict that later training steps cannot change (tensors cloned)."""
    return copy.deepcopy({k: v.detach() if torch.is_tensor(v) else v for k, v in state_dict.items()})
