"""A run's files on disk while it trains: the best weights, the resumable state, and reading it back.

``model.safetensors`` holds the best weights so far (EMA weights when EMA is on); ``state.pt`` the
state after the last completed epoch (weights, optimizer, EMA, per-epoch history), read back with
``torch.load(weights_only=True)``. Both are written by one background thread, in order, atomically,
so training does not wait for the disk and an interrupted run leaves a consistent pair.
"""
from __future__ import annotations

import copy
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import safetensors.torch
import torch

from .callbacks import find_ema
from .distributed import unwrap
from .io import atomic_path, write_json


class CheckpointWriter:
    """Writes a run's checkpoints in a background thread, one after the other."""

    def __init__(self, run_dir: Path):
        self.dir, self.pending = Path(run_dir), []
        self.pool = ThreadPoolExecutor(1)

    def flush(self) -> None:
        """Wait for the writes in flight; re-raise a failed one."""
        while self.pending:
            self.pending.pop(0).result()

    def close(self) -> None:
        self.flush()
        self.pool.shutdown()

    def save_best(self, model: torch.nn.Module) -> None:
        """Best weights so far to model.safetensors."""
        self.flush()
        sd = {k: v.contiguous() for k, v in snapshot(model.state_dict()).items()}

        def write():
            with atomic_path(self.dir / "model.safetensors") as tmp:
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

        def write():
            with atomic_path(self.dir / "state.pt") as tmp:
                torch.save(state, tmp)
            write_json(self.dir / "metrics.json", {"complete": False, "epochs": history})
        self.pending.append(self.pool.submit(write))


def load_state(learn, state_file: Path) -> tuple[int, list]:
    """Restore weights, optimizer and EMA from ``state.pt``; returns (epochs done, history)."""
    state = torch.load(state_file, map_location="cpu", weights_only=True)
    learn.model.load_state_dict(state["model"])
    learn.opt.load_state_dict(state["opt"])
    if "ema" in state:
        ema = find_ema(learn)
        ema.before_fit()
        ema.model_ema.module.load_state_dict(state["ema"])
    return int(state["epoch"]), json.loads(state["history"])


def snapshot(state_dict: dict) -> dict:
    """A copy of a state dict that later training steps cannot change (tensors cloned)."""
    return copy.deepcopy({k: v.detach() if torch.is_tensor(v) else v for k, v in state_dict.items()})
