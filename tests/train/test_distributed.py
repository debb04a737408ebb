"""lib.train.distributed: one run on 2 processes (gloo on this CPU): one set of artifacts, OOF with each
validation image once, metrics within the seed-to-seed noise of one process with the same global
batch, and a kill -9 of the whole job followed by a rerun that resumes and finishes."""
from __future__ import annotations

import json
import os
import random
import time

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from shared import start_and_kill

from lib.core.config import TrainConfig
from lib.core.runlock import lock_run
from lib.ops.jobs import make_jobs
from lib.ops.runner import run_grid
from lib.train.distributed import ShardedDataLoader, launch
from lib.train.loop import setup_run, train_fold

TINY = dict(backbone="test_resnet", img_size=24, batch_size=32, epochs=10, lr=1e-2, n_folds=2, progress=False,
            verbose=False, num_workers=0)
TINY["precision"] = "fp32"  # figures that must not depend on whether this CPU has native bf16 (lib.core.precision)


def test_sharded_loader_splits_each_epoch_between_ranks():
    data = list(range(103))
    loaders = [ShardedDataLoader(data, rank=r, world=2, bs=8, shuffle=True, drop_last=True) for r in (0, 1)]
    for dl in loaders:
        dl.rng = random.Random(7)                     # ReseedEachEpoch gives every rank the same rng
    seen = [torch.cat([b for b in dl]).tolist() for dl in loaders]
    assert len(loaders[0]) == len(loaders[1]) == 51 // 8
    assert not set(seen[0]) & set(seen[1]) and len(seen[0]) == len(seen[1]) == 48
    assert seen[0] != sorted(seen[0])                 # shuffled


@pytest.mark.slow
@pytest.mark.parametrize("extra", [{}, {"ema": 0.9, "grad_accum": 2}], ids=["plain", "ema_accum"])
def test_two_processes_train_one_run(digits_comp, tmp_path, extra):
    runs = tmp_path / "runs"
    single = [train_fold(TrainConfig(data_dir=str(digits_comp), runs_dir=str(runs), run_name=f"s{seed}", seed=seed,
                                     **extra, **TINY)) for seed in (42, 43, 44)]
    ddp = train_fold(TrainConfig(data_dir=str(digits_comp), runs_dir=str(runs), run_name="ddp", devices=2, **extra,
                                 **TINY))
    files = sorted(os.listdir(runs / "ddp"))
    assert files == ["classes.json", "curves.png", "data.json", "env.json", "metrics.json", "model.safetensors",
                     "oof.csv", "params.yaml", "state.pt", "test.csv"]
    oof = pd.read_csv(runs / "ddp" / "oof.csv", dtype={"id": str})
    folds = pd.read_csv(digits_comp / "folds.csv", dtype={"id": str})
    assert sorted(oof["id"]) == sorted(folds.loc[folds["fold"] == 0, "id"]) and not oof["id"].duplicated().any()
    assert ddp["complete"] and len(ddp["epochs"]) == 10
    losses = [s["log_loss"] for s in single]
    print(f"{extra}: single-process log loss {[round(v, 4) for v in losses]}, 2 processes {ddp['log_loss']:.4f}")
    assert min(losses) - np.ptp(losses) <= ddp["log_loss"] <= max(losses) + np.ptp(losses)


@pytest.mark.slow
def test_kill_9_of_a_data_parallel_run_then_rerun_resumes(digits_comp, tmp_path):
    recipe = tmp_path / "ddp.yaml"
    recipe.write_text(yaml.safe_dump({**TINY, "img_size": 64, "epochs": 8, "devices": 2, "data_dir": str(digits_comp)}))
    runs = tmp_path / "runs"
    runs.mkdir()
    metrics = runs / "ddp_f0" / "metrics.json"
    killed = start_and_kill(make_jobs([recipe], [0], runs_dir=str(runs))[0])   # papermill, kernel, workers
    assert not killed["complete"] and 2 <= len(killed["epochs"]) < 8
    time.sleep(2)                                       # workers notice their parent died (PDEATHSIG)
    res = run_grid([recipe], [0], runs_dir=str(runs))
    assert res["done"] == ["ddp_f0"], res
    done = json.loads(metrics.read_text())
    assert done["complete"] and len(done["epochs"]) == 8
    assert done["epochs"][:len(killed["epochs"])] == killed["epochs"]   # the saved epochs were kept, not redone


def _set_up_rank(cfg, local_rank):
    """A worker's setup_run, as ``lib.train.loop.train_rank`` starts (spawn finds it by name)."""
    setup_run(cfg)


@pytest.mark.slow
def test_data_parallel_workers_delete_nothing_and_take_no_lock(digits_comp, tmp_path):
    """force deletes the run folder once, in the launching process, under its lock: before, each worker
    deleted it again while the others wrote to it (FileNotFoundError in 7 of 40 two-process trials)."""
    run_dir = tmp_path / "runs" / "ddp"
    run_dir.mkdir(parents=True)
    (run_dir / "kept.txt").write_text("written by the launching process after its delete")
    cfg = TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path / "runs"), run_name="ddp", devices=2,
                      force=True, **TINY)
    with lock_run(run_dir):                 # held by the launching process's setup_run, as in fit()
        launch(cfg, ["cpu", "cpu"], _set_up_rank)
    assert (run_dir / "kept.txt").exists() and (run_dir / "params.yaml").exists()
