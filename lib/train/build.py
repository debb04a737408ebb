"""The objects of a run, each built from the recipe alone: model, datasets, Learner, callbacks.

    model, data_cfg = build_model(cfg, comp.num_classes)
    data = build_datasets(cfg, comp, folds, data_cfg)
    learn = build_learner(cfg, model, data, device, run_dir)
    learn.add_cbs(training_callbacks(cfg, device, choose_precision(device, cfg.precision).dtype))

Training (``lib.train.loop.setup_run``) and re-prediction (``lib.predict.inference.predict_fold``) both build
through here, so a run is predicted with exactly the model and the image pipeline it trained with.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fastai.callback.channelslast import ChannelsLast
from fastai.callback.fp16 import AMPMode, MixedPrecision
from fastai.callback.mixup import CutMix, MixUp
from fastai.callback.progress import ProgressCallback
from fastai.callback.training import GradientAccumulation, GradientClip
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.learner import Learner

from lib.core.config import TrainConfig
from lib.core.device import default_num_workers
from lib.core.paths import resolve
from lib.data.competition import Competition
from lib.data.dataset import ImageDataset, image_dataset
from lib.data.folds import split_rows
from lib.data.soft_targets import add_teacher
from lib.model.losses import get_loss, inverse_frequency_weights
from lib.model.optim import ScaledLrOptim, compile_model, lr_scales, optimizer_factory, param_groups
from lib.train.callbacks import EMA, CpuAutocast, DeviceSmoothLoss, FreezeBody, MixUpCutMix, ReseedEachEpoch
from lib.train.distributed import (
    DistributedTrainer,
    NoSyncWhileAccumulating,
    ShardedDataLoader,
    StopWhenAsked,
    rank,
    world_size,
)
from lib.train.sampler import WeightedDataLoader, sample_weights
from lib.train.tracking import tracker_callback


@dataclass
class FoldData:
    """One fold's datasets: train (augmented), valid (its OOF rows, ``valid_rows``) and test."""
    train: ImageDataset
    valid: ImageDataset
    test: ImageDataset
    train_rows: pd.DataFrame
    valid_rows: pd.DataFrame


def build_datasets(cfg: TrainConfig, comp: Competition, folds: pd.DataFrame, data_cfg: dict) -> FoldData:
    """Train, valid and test datasets of ``cfg.fold``; ``exclude_ids`` leave the training images only.
    ``full_data`` trains on every image (``lib.data.folds.split_rows``); a teacher gives soft targets and
    pseudo-labelled test images to the training set, under the fold rule (``lib.predict.teacher``)."""
    tr, va = split_rows(cfg, folds)
    if cfg.exclude_ids:
        table = pd.read_csv(resolve(cfg.exclude_ids), dtype={"id": str})
        if "id" not in table.columns:
            raise ValueError(f"{cfg.exclude_ids}: needs an 'id' column (has {list(table.columns)}); "
                             "03_oof_analysis's noisy_labels.csv and 01_eda's duplicates.csv have one")
        drop = set(table["id"])
        if cfg.verbose:
            print(f"excluding {len(set(tr['id']) & drop)} train images listed in {cfg.exclude_ids}")
        tr = tr[~tr["id"].isin(drop)]
    if cfg.max_samples:
        tr = tr.sample(min(cfg.max_samples, len(tr)), random_state=cfg.seed)
        va = va.sample(min(cfg.max_samples, len(va)), random_state=cfg.seed)
    if len(tr) < cfg.batch_size:
        raise ValueError(f"batch_size {cfg.batch_size} is larger than the {len(tr)} training images of fold {cfg.fold}")
    train = add_teacher(cfg, comp, folds, tr, image_dataset(cfg, comp, "train", tr, cfg.aug, data_cfg),
                        lambda rows: image_dataset(cfg, comp, "test", rows, cfg.aug, data_cfg, targets=False))
    return FoldData(train, image_dataset(cfg, comp, "train", va, "none", data_cfg),
                    image_dataset(cfg, comp, "test", comp.test, "none", data_cfg, targets=False),
                    tr.reset_index(drop=True), va.reset_index(drop=True))


def build_learner(cfg: TrainConfig, model: torch.nn.Module, data: FoldData, device: torch.device,
                  run_dir: Path, num_classes: int) -> Learner:
    """fastai Learner over ``data``: timm's optimizer ``opt`` (default torch's multi-tensor AdamW) with
    timm's weight-decay split (none on norms, biases and other 1-d tensors) and, with ``layer_decay``, a
    lower lr per block further from the head (``lib.model.optim``), the recipe's loss, training images
    drawn by ``sampler`` (``lib.train.sampler``), the model placed on ``device`` (and compiled with
    ``compile``)."""
    workers = default_num_workers(device, cfg.num_workers)
    model.to(device)  # fastai would move it to dls.device, which stays None on CUDA (see below)
    if device.type == "cuda":  # (cuDNN's autotuner: on while the run trains and predicts, lib.train.loop)
        # fastai's to_device copies blocking, which waits for the GPU's queue every batch; copy from
        # pinned memory without blocking instead, so the next batch is ready while the GPU computes
        dl = partial(DataLoader, num_workers=workers, pin_memory=True, after_batch=ToDevice(device))
    else:
        dl = partial(DataLoader, num_workers=workers, device=device)
    world = world_size()  # > 1 inside a data-parallel worker: its share of every global batch
    loader = partial(ShardedDataLoader, rank=rank(), world=world) if world > 1 else WeightedDataLoader
    train = loader(data.train, weights=sample_weights(data.train.targets, cfg.sampler),  # None: each image once
                   bs=cfg.batch_size // world, shuffle=True, drop_last=True, **dl.keywords)
    dls = DataLoaders(train, dl(data.valid, bs=cfg.batch_size * 2), device=None if device.type == "cuda" else device)
    loss_args = dict(cfg.loss_args)
    if loss_args.get("weight") == "inverse_frequency":
        loss_args["weight"] = inverse_frequency_weights(np.bincount(data.train_rows["target"], minlength=num_classes))
    groups = param_groups(model, cfg.weight_decay, cfg.layer_decay)
    if cfg.compile:
        compile_model(model)
    learn = Learner(dls, model, loss_func=get_loss(cfg.loss, **loss_args),
                    splitter=lambda m: [g["params"] for g in groups], wd=None, path=run_dir, model_dir=".",
                    opt_func=partial(ScaledLrOptim, opt=optimizer_factory(cfg.opt, cfg.opt_args),
                                     scales=lr_scales(groups)))
    learn.create_opt()
    for pg, g in zip(learn.opt.opt.param_groups, groups):
        pg["weight_decay"] = g["weight_decay"]
    if device.type == "cuda":
        learn.recorder.smooth_loss = DeviceSmoothLoss(beta=learn.recorder.smooth_loss.beta)
    if not cfg.progress:
        learn.remove_cb(ProgressCallback)
        learn.logger = lambda *a, **k: None  # the run recorder prints one line per epoch
    return learn


def training_callbacks(cfg: TrainConfig, device: torch.device, dtype: torch.dtype | None) -> list:
    """Reseeding, the frozen body of ``freeze_epochs``, EMA, MixUp/CutMix, gradient accumulation and
    clipping, channels_last and mixed precision in ``dtype`` (``lib.core.precision.choose_precision``;
    None: fp32), stopping, DDP inside a data-parallel worker, and the experiment tracker (on the process
    that writes: rank 0), as the recipe asks."""
    cbs = [ReseedEachEpoch(cfg.seed), StopWhenAsked()]
    if cfg.tracker != "none" and rank() == 0:
        cbs.append(tracker_callback(cfg))
    world = world_size()
    if world > 1:
        cbs.append(DistributedTrainer(device, cfg.sync_bn))
    if cfg.freeze_epochs:
        cbs.append(FreezeBody(cfg.freeze_epochs))
    if cfg.ema or cfg.ema_epochs:
        cbs.append(EMA(cfg.ema, cfg.ema_epochs, cfg.grad_accum))
    if cfg.mixup and cfg.cutmix:
        cbs.append(MixUpCutMix(cfg.mixup, cfg.cutmix))
    elif cfg.mixup or cfg.cutmix:
        cbs.append(MixUp(cfg.mixup) if cfg.mixup else CutMix(cfg.cutmix))
    if cfg.grad_accum > 1:
        n_acc = cfg.batch_size // world * cfg.grad_accum  # images per optimizer step on this process
        cbs.append(GradientAccumulation(n_acc=n_acc))
        if world > 1:
            cbs.append(NoSyncWhileAccumulating(n_acc))
    if cfg.grad_clip:
        cbs.append(GradientClip(cfg.grad_clip))
    if device.type == "cuda":
        cbs.append(ChannelsLast())
        if dtype is not None:  # fp16 with loss scaling
            cbs.append(MixedPrecision(amp_mode=AMPMode.BF16 if dtype == torch.bfloat16 else AMPMode.FP16))
    elif dtype == torch.bfloat16:  # fp32 on the CPU stays in contiguous layout: see bench/README (precision)
        cbs += [ChannelsLast(), CpuAutocast()]
    return cbs


class ToDevice:
    """``after_batch`` for fastai's DataLoader: move a batch to ``device`` without blocking the host."""

    def __init__(self, device):
        self.device = device

    def __call__(self, b):
        return tuple(t.to(self.device, non_blocking=True) for t in b)
