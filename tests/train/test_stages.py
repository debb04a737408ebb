"""lib.train.stages: the lr schedule phase by phase, progressive resizing (each size in order, OOF at the
last, resume mid-stage), the plateau schedule (a drop after a stall, the same after a resume), cosine
with warm restarts (each restart at its iteration, the same after a resume), the freeze epochs' own cycle."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fastai.callback.core import Callback
from shared import Interrupt, SpoilEpoch

from lib.core.config import TrainConfig
from lib.predict.inference import predict_fold
from lib.train.loop import fit, setup_run, train_fold, write_predictions
from lib.train.stages import LrSchedule, lr_phases, plateau_drops

TINY = dict(backbone="test_resnet", n_folds=3, fold=0, batch_size=32, lr=3e-3, progress=False, verbose=False,
            num_workers=0)
TINY["precision"] = "fp32"  # figures that must not depend on whether this CPU has native bf16 (lib.core.precision)
SCORES = ("train_loss", "valid_loss", "log_loss", "accuracy", "lr", "img_size")




class _FirstBatch(Callback):
    """The input size and the lr of each epoch's first training batch."""
    order = 61  # after the lr is set

    def __init__(self):
        self.seen = {}

    def before_batch(self):
        if self.training and self.iter == 0:
            self.seen[self.epoch] = (self.xb[0].shape[-1], self.opt.hypers[-1]["lr"])


class _LrTrace(Callback):
    """The lr of every training batch, by (epoch, iteration)."""
    order = 61  # after the lr is set

    def __init__(self):
        self.lrs = {}

    def before_batch(self):
        if self.training:
            self.lrs[(self.epoch, self.iter)] = self.opt.hypers[-1]["lr"]


def _interrupted_then_resumed(cfg, at, before=(), after=()):
    """A run killed at the start of epoch ``at`` (with callbacks ``before``), then resumed (``after``)."""
    run = setup_run(cfg)
    run.learn.add_cbs([*before, Interrupt(at)])
    with pytest.raises(KeyboardInterrupt):
        fit(run)
    run = setup_run(cfg)
    assert run.start_epoch == at
    run.learn.add_cbs(list(after))
    fit(run)
    return write_predictions(run)


def _same_history(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for k in SCORES:
            assert x[k] == pytest.approx(y[k], rel=1e-6, abs=1e-7), (x["epoch"], k)


def test_lr_phases_restart_per_stage_and_hold_swa_lr():
    cfg = TrainConfig(backbone="test_resnet", stages=[[16, 2, 1e-3], [24, 2]], img_size=24, epochs=4, lr=3e-3)
    s = LrSchedule(lr_phases(cfg))
    assert s.lr_at(0) == pytest.approx(1e-3 / 25) and s.lr_at(0.2) == pytest.approx(1e-3)   # warm-up: 10%
    assert s.lr_at(1.999) < 1e-6                                                              # annealed
    assert s.lr_at(2) == pytest.approx(3e-3 / 25) and s.lr_at(2.2) == pytest.approx(3e-3)   # a new cycle
    swa = LrSchedule(lr_phases(TrainConfig(backbone="test_resnet", epochs=5, lr=3e-3, swa_epochs=2, swa_lr=1e-4)))
    assert swa.lr_at(2.999) < 1e-6 and swa.lr_at(3) == swa.lr_at(4.99) == 1e-4
    flat = LrSchedule(lr_phases(TrainConfig(backbone="test_resnet", epochs=4, lr=3e-3, schedule="plateau")))
    assert flat.lr_at(0) == pytest.approx(3e-3 / 25) and flat.lr_at(0.4) == flat.lr_at(3.9) == pytest.approx(3e-3)


def test_stages_train_each_size_in_order_and_resume_mid_stage(digits_comp, tmp_path):
    recipe = dict(data_dir=str(digits_comp), stages=[[16, 2], [24, 2, 2e-3]], img_size=24, epochs=4, **TINY)
    first = _FirstBatch()
    run = setup_run(TrainConfig(runs_dir=str(tmp_path / "a"), **recipe))
    run.learn.add_cb(first)
    fit(run)
    ref = write_predictions(run)
    assert [h["img_size"] for h in ref["epochs"]] == [16, 16, 24, 24]
    assert {e: s for e, (s, _) in first.seen.items()} == {0: 16, 1: 16, 2: 24, 3: 24}
    assert first.seen[0][1] == pytest.approx(3e-3 / 25) and first.seen[2][1] == pytest.approx(2e-3 / 25)
    for split in ("oof", "test"):  # predicted at the last stage's size: img_size, as re-prediction does
        kept = pd.read_csv(run.dir / f"{split}.csv", dtype={"id": str})
        again = predict_fold(run.dir, split=split)
        assert np.allclose(again.iloc[:, -10:].to_numpy(), kept.iloc[:, -10:].to_numpy(), atol=1e-5)
    assert (digits_comp / "cache" / "16px").exists() and (digits_comp / "cache" / "24px").exists()
    # killed in stage 2 (after epoch 3 of 4): resumes in stage 2, at its size, as if never stopped
    second = _FirstBatch()
    got = _interrupted_then_resumed(TrainConfig(runs_dir=str(tmp_path / "b"), **recipe), 3, after=[second])
    assert second.seen == {3: first.seen[3]}
    _same_history(ref["epochs"], got["epochs"])
    assert got["log_loss"] == pytest.approx(ref["log_loss"], rel=1e-5)


def test_stage_settings_say_one_thing():
    base = dict(backbone="test_resnet", stages=[[16, 2], [24, 3]], img_size=24, epochs=5)
    TrainConfig(**base)
    for bad, msg in (({"img_size": 32}, "img_size 32 but the last stage trains at 24: set img_size 24"),
                     ({"epochs": 6}, "epochs 6 but the stages add up to 5 epochs: set epochs 5"),
                     ({"stages": [[16, 2], [24]]}, r"not a stage: \[24\]"),
                     ({"stages": [[16, 2, -1.0], [24, 3]]}, "lr > 0"),
                     ({"stages": []}, "or None for one stage"),
                     ({"schedule": "plateau"}, "schedule plateau with stages"),
                     ({"swa_epochs": 3, "swa_lr": 1e-3}, r"swa_epochs 3: averages 2\.\.2 epochs \(the last stage's")):
        with pytest.raises(ValueError, match=msg):
            TrainConfig(**{**base, **bad})
    with pytest.raises(ValueError, match="plateau_factor 1.5"):
        TrainConfig(backbone="test_resnet", schedule="plateau", plateau_factor=1.5)
    with pytest.raises(ValueError, match="drop swa_lr"):
        TrainConfig(backbone="test_resnet", schedule="plateau", swa_epochs=2, swa_lr=1e-3)


def test_plateau_drops_count_epochs_without_a_new_best():
    h = [{"epoch": e, "log_loss": v, "accuracy": -v} for e, v in enumerate([1.0, 0.9, 0.95, 0.97, 0.8, 0.85])]
    assert [plateau_drops(h[:n], "log_loss", 1) for n in range(7)] == [0, 0, 0, 1, 2, 2, 3]
    assert [plateau_drops(h[:n], "log_loss", 2) for n in range(7)] == [0, 0, 0, 0, 1, 1, 1]
    assert plateau_drops(h, "accuracy", 1) == 3   # greater is better: the same epochs




def test_plateau_lowers_the_lr_after_a_stall_and_resumes(digits_comp, tmp_path):
    recipe = dict(data_dir=str(digits_comp), schedule="plateau", plateau_factor=0.5, plateau_patience=1,
                  img_size=16, epochs=4, **TINY)
    run = setup_run(TrainConfig(runs_dir=str(tmp_path / "a"), **recipe))
    run.learn.add_cb(SpoilEpoch(1))
    fit(run)
    ref = write_predictions(run)
    h = ref["epochs"]
    assert h[1]["log_loss"] > h[0]["log_loss"]                     # the stall
    assert [x["lr"] for x in h[:3]] == pytest.approx([3e-3, 3e-3, 1.5e-3])
    gained = h[2]["log_loss"] < h[0]["log_loss"]
    assert h[3]["lr"] == pytest.approx(1.5e-3 if gained else 0.75e-3)
    got = _interrupted_then_resumed(TrainConfig(runs_dir=str(tmp_path / "b"), **recipe), 3, before=[SpoilEpoch(1)])
    _same_history(h, got["epochs"])   # epoch 3's lr from the history the resumed run read back


def test_onecycle_without_stages_trains_as_before(digits_comp, tmp_path):
    """The default schedule through LrSchedule: warm-up from lr / 25, peak, anneal, one size."""
    first = _FirstBatch()
    run = setup_run(TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path), img_size=16, epochs=2, **TINY))
    run.learn.add_cb(first)
    fit(run)
    assert first.seen[0] == (16, pytest.approx(3e-3 / 25)) and run.history[-1]["lr"] < 3e-3 / 10
    assert train_fold(run.cfg)["complete"]


def test_cosine_restarts_restart_at_their_iterations_and_resume(digits_comp, tmp_path):
    """Cycles of 0.5, 1 and 2 epochs, then a 4-epoch one: restarts at 0.5, 1.5 and 3.5 epochs."""
    recipe = dict(data_dir=str(digits_comp), schedule="cosine_restarts", restart_epochs=0.5, restart_mult=2.0,
                  warmup_pct=0.0, img_size=16, epochs=4, **{**TINY, "batch_size": 16})
    trace = _LrTrace()
    run = setup_run(TrainConfig(runs_dir=str(tmp_path / "a"), **recipe))
    run.learn.add_cb(trace)
    fit(run)
    n = len(run.learn.dls.train)  # iterations per epoch
    assert n == 8
    lrs = [trace.lrs[(e, i)] for e in range(4) for i in range(n)]
    restarts = [k for k in range(1, len(lrs)) if lrs[k] > lrs[k - 1]]
    assert restarts == [4, 12, 28]                                  # 0.5, 1.5, 3.5 epochs of 8 iterations
    assert all(lrs[k] == pytest.approx(3e-3) for k in [0, *restarts])
    assert lrs[3] < lrs[2] < lrs[1] < 3e-3 and lrs[27] < 3e-3 / 50  # each cycle anneals towards lr / 1e5
    # killed before epoch 2, resumed: epochs 2 and 3 get the lr of the uninterrupted run, batch by batch
    again = _LrTrace()
    _interrupted_then_resumed(TrainConfig(runs_dir=str(tmp_path / "b"), **recipe), 2, after=[again])
    assert again.lrs == {k: v for k, v in trace.lrs.items() if k[0] >= 2}


def test_freeze_epochs_are_a_cycle_of_their_own():
    cfg = TrainConfig(backbone="test_resnet", pretrained="hub", freeze_epochs=1, epochs=4, lr=3e-3)
    s = LrSchedule(lr_phases(cfg))
    assert [n for n, _ in lr_phases(cfg)] == [1, 3]
    assert s.lr_at(0) == s.lr_at(1) == pytest.approx(3e-3 / 25) and s.lr_at(0.999) < 1e-5  # warm-up, anneal, again
    staged = lr_phases(cfg.replace(stages=[[16, 2], [32, 2]], img_size=32))
    assert [n for n, _ in staged] == [1, 1, 2]
