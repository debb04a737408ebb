"""Data-parallel training of one run on several devices (torch DistributedDataParallel).

    cfg = TrainConfig(..., devices=2)        # 2 GPUs (NCCL), or 2 CPU processes (gloo)
    run = setup_run(cfg); fit(run)           # fit starts the workers, waits, and reads their result

Why worker processes started from the kernel (``torch.multiprocessing`` with "spawn") and not
``torchrun``: papermill runs one kernel per notebook, so 02_train, a headless grid and
``train_fold`` all train the same way, with no launcher around them; "spawn" (not "fork") because a
kernel may already hold a CUDA context. Each worker rebuilds the run from the recipe
(``setup_run``), so nothing but the recipe crosses the process boundary.

What changes under DDP, and what does not:
- the global batch stays ``batch_size``: each of the N ranks takes ``batch_size // N`` images of
  every step, from one permutation per epoch that all ranks draw alike (``ShardedDataLoader``);
- only rank 0 writes (params, checkpoints, metrics, OOF and test predictions) and validates, on the
  whole fold with the plain (or EMA) model, so OOF holds each image once: no sampler padding;
- resume: every rank loads the same ``state.pt``; early stopping is decided on rank 0 and
  broadcast; gradient accumulation skips the all-reduce on its accumulation steps (``no_sync``).
"""
from __future__ import annotations

import os
import socket
from contextlib import nullcontext

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from fastai.callback.core import Callback, CancelFitException, CancelValidException

from lib.train.sampler import WeightedDataLoader


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


class ShardedDataLoader(WeightedDataLoader):
    """fastai DataLoader that serves rank ``rank`` of ``world`` its share of each epoch: the epoch's
    permutation, or its draws by ``weights`` (``lib.train.sampler``; the same on every rank: fastai's
    ``rng``, reseeded per epoch) split ``rank::world`` and cut to ``len(dataset) // world`` items, so
    every rank runs the same number of steps."""

    def __init__(self, dataset, rank: int, world: int, weights=None, **kwargs):
        super().__init__(dataset, weights, **kwargs)
        self.rank, self.world, self.n_total = rank, world, len(dataset)
        self.n = self.n_total // world

    def get_idxs(self):
        idxs = list(range(self.n_total))
        if self.shuffle:
            idxs = self.shuffle_fn(idxs)
        return idxs[self.rank::self.world][:self.n]


class DistributedTrainer(Callback):
    """Wraps the model in DDP for training; validation runs on rank 0 alone with the plain model (or
    the EMA's, which swaps first); other ranks skip it. After each epoch rank 0's decision to stop
    (``learn.stop_training``, set by the run recorder) is broadcast, so all ranks stop together."""
    order = 61  # after EMA (60) swaps its weights in for validation, before the recorder (65)

    def __init__(self, device: torch.device, sync_bn: bool = False):
        self.device, self.sync_bn = device, sync_bn

    def before_fit(self):
        model = self.learn.model
        if self.sync_bn:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.learn.model = self.ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def before_validate(self):
        if rank() != 0:
            raise CancelValidException()
        self.swapped = self.learn.model is self.ddp
        if self.swapped:
            self.learn.model = self.ddp.module

    def after_validate(self):
        if getattr(self, "swapped", False):
            self.learn.model, self.swapped = self.ddp, False

    def after_cancel_validate(self):
        self.after_validate()

    def after_fit(self):
        self.learn.model = self.ddp.module


class NoSyncWhileAccumulating(Callback):
    """Under gradient accumulation, backward passes that do not end in an optimizer step run in
    DDP's ``no_sync``: gradients add up locally and are all-reduced once, on the stepping pass."""
    order = 1

    def __init__(self, n_acc: int):
        self.n_acc, self.seen, self.ctx = n_acc, 0, nullcontext()

    def before_fit(self):
        self.seen = 0

    def before_backward(self):
        self.seen += len(self.learn.yb[0])
        steps_now = self.seen >= self.n_acc
        if steps_now:
            self.seen = 0
        model = self.learn.model
        self.ctx = nullcontext() if steps_now or not hasattr(model, "no_sync") else model.no_sync()
        self.ctx.__enter__()

    def after_backward(self):
        self.ctx.__exit__(None, None, None)
        self.ctx = nullcontext()


class StopWhenAsked(Callback):
    """Ends training once ``learn.stop_training`` is set (early stopping); under DDP rank 0's value
    is broadcast first, so every rank leaves ``fit`` at the same epoch."""
    order = 70

    def after_epoch(self):
        stop = bool(getattr(self.learn, "stop_training", False))
        if world_size() > 1:
            flag = torch.tensor([int(stop)], device=next(unwrap(self.learn.model).parameters()).device)
            dist.broadcast(flag, 0)
            stop = bool(flag.item())
        if stop:
            raise CancelFitException()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(cfg, devices: list, train) -> None:
    """Run ``train(cfg, local_rank)`` (a module-level function: spawn pickles it by name) in one process
    per entry of ``devices`` ("cuda:1", "cpu", ...), each in its process group, and wait; a failed
    worker's error is raised here."""
    mp.start_processes(_worker, args=(cfg, devices, free_port(), train), nprocs=len(devices), start_method="spawn",
                       join=True)


def _worker(local_rank: int, cfg, devices: list, port: int, train) -> None:
    """One rank: join the group on ``devices[local_rank]``, then ``train`` this rank's recipe."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # this worker process's own environment
    device = torch.device(devices[local_rank])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:  # share the cores: N processes x all threads would oversubscribe them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // len(devices)))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=local_rank, world_size=len(devices))
    try:
        train(cfg.replace(device=str(device), verbose=cfg.verbose and local_rank == 0,
                          progress=cfg.progress and local_rank == 0), local_rank)
    finally:
        dist.destroy_process_group()
