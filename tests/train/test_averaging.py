"""lib.train.averaging: SWA and top-k weights are the mean of the right epochs' weights, BatchNorm is
recomputed for them, OOF and test come from them, a resume gives the same average, bad mixes are refused."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import safetensors.torch
import torch
from fastai.callback.core import Callback
from shared import Interrupt, SpoilEpoch

from lib.core.config import TrainConfig
from lib.model.backbones import create_backbone
from lib.predict.inference import predict_fold
from lib.train.averaging import recompute_batchnorm
from lib.train.loop import fit, setup_run, write_predictions

TINY = dict(backbone="test_resnet", n_folds=3, fold=0, img_size=24, batch_size=32, epochs=3, lr=3e-3,
            progress=False, verbose=False, num_workers=0)
TINY["precision"] = "fp32"  # figures that must not depend on whether this CPU has native bf16 (lib.core.precision)


class _Snapshots(Callback):
    """Every epoch's weights as it ended (after the recorder scored it)."""
    order = 66

    def __init__(self):
        self.weights = {}

    def after_epoch(self):
        self.weights[self.epoch] = {k: v.detach().clone() for k, v in self.learn.model.state_dict().items()}






def _train(cfg, *cbs):
    run = setup_run(cfg)
    for cb in cbs:
        run.learn.add_cb(cb)
    fit(run)
    return run, write_predictions(run)


def _saved(run) -> dict:
    return safetensors.torch.load_file(str(run.dir / "model.safetensors"))


def _params(model) -> list[str]:
    return [k for k, _ in model.named_parameters()]


def _check_mean(run, snaps: _Snapshots, epochs: list[int]) -> None:
    saved = _saved(run)
    for k in _params(run.learn.model):
        mean = torch.stack([snaps.weights[e][k].double() for e in epochs]).mean(0).float()
        assert torch.allclose(saved[k], mean, atol=1e-6), k


def test_swa_averages_the_last_epochs_and_recomputes_batchnorm(digits_comp, tmp_path):
    snaps = _Snapshots()
    run, m = _train(TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path), swa_epochs=2, **TINY), snaps)
    _check_mean(run, snaps, [1, 2])
    assert m["averaging"] == {"method": "swa", "epochs": [1, 2], "bn_updated": True, "swa_lr": None}
    assert m["weights_from"] == "swa" and m["folds_sha1"]
    # BatchNorm statistics are those of the averaged weights: recomputing them over the same seeded pass
    # gives them back, and they are no epoch's own
    saved = _saved(run)
    stats = [k for k in saved if k.endswith(("running_mean", "running_var"))]
    assert stats
    model, _ = create_backbone("test_resnet", 10)
    model.load_state_dict(saved)
    assert recompute_batchnorm(model, run.learn.dls.train, 42, 3, run.precision.dtype)  # as the run did
    for k in stats:
        assert torch.allclose(model.state_dict()[k], saved[k], rtol=1e-4, atol=1e-6), k
        assert not any(torch.allclose(snaps.weights[e][k], saved[k], rtol=1e-3) for e in (1, 2)), k
    # OOF and test are the averaged weights' predictions: re-predicted from model.safetensors, and not
    # the last epoch's scores
    oof = pd.read_csv(run.dir / "oof.csv", dtype={"id": str})
    again = predict_fold(run.dir, split="oof")
    classes = list(oof.columns[3:])
    assert np.allclose(again[classes].to_numpy(), oof[classes].to_numpy(), atol=1e-5)
    assert abs(m["log_loss"] - m["valid_last"]["log_loss"]) > 1e-4


def test_swa_lr_holds_the_lr_and_a_resume_gives_the_same_average(digits_comp, tmp_path):
    recipe = dict(data_dir=str(digits_comp), swa_epochs=2, swa_lr=1e-3, **TINY)
    ref_run, ref = _train(TrainConfig(runs_dir=str(tmp_path / "a"), **recipe))
    assert [h["lr"] for h in ref["epochs"][1:]] == pytest.approx([1e-3, 1e-3])
    assert ref["epochs"][0]["lr"] < 3e-3 / 4       # the schedule anneals over the first epoch alone
    run = setup_run(TrainConfig(runs_dir=str(tmp_path / "b"), **recipe))
    run.learn.add_cb(Interrupt(at=2))
    with pytest.raises(KeyboardInterrupt):
        fit(run)
    state = torch.load(run.dir / "state.pt", weights_only=True)
    assert state["averaging"]["method"] == "swa" and int(state["averaging"]["swa"]["n_averaged"]) == 1
    run = setup_run(TrainConfig(runs_dir=str(tmp_path / "b"), **recipe))
    assert run.start_epoch == 2
    fit(run)
    got = write_predictions(run)
    a, b = _saved(ref_run), _saved(run)
    assert all(torch.allclose(a[k].float(), b[k].float(), rtol=1e-5, atol=1e-6) for k in a)
    assert got["log_loss"] == pytest.approx(ref["log_loss"], rel=1e-5)
    assert got["averaging"] == ref["averaging"] == {"method": "swa", "epochs": [1, 2], "bn_updated": True,
                                                     "swa_lr": 1e-3}


def test_top_k_averages_the_best_epochs_by_monitor_and_resumes(digits_comp, tmp_path):
    recipe = dict(data_dir=str(digits_comp), average_top_k=2, **{**TINY, "epochs": 4})
    snaps = _Snapshots()
    ref_run, ref = _train(TrainConfig(runs_dir=str(tmp_path / "a"), **recipe), snaps, SpoilEpoch(3))
    hist = ref["epochs"]
    best2 = sorted(sorted(range(4), key=lambda e: hist[e]["log_loss"])[:2])
    assert 3 not in best2                          # the spoiled last epoch is left out
    assert ref["averaging"] == {"method": "top_k", "epochs": best2, "bn_updated": True, "k": 2,
                                "monitor": "log_loss"}
    _check_mean(ref_run, snaps, best2)
    run = setup_run(TrainConfig(runs_dir=str(tmp_path / "b"), **recipe))
    run.learn.add_cb(Interrupt(at=3))
    with pytest.raises(KeyboardInterrupt):
        fit(run)
    run = setup_run(TrainConfig(runs_dir=str(tmp_path / "b"), **recipe))
    run.learn.add_cb(SpoilEpoch(3))
    fit(run)
    got = write_predictions(run)
    a, b = _saved(ref_run), _saved(run)
    assert all(torch.allclose(a[k].float(), b[k].float(), rtol=1e-5, atol=1e-6) for k in a)
    assert got["averaging"] == ref["averaging"]
    oof = pd.read_csv(run.dir / "oof.csv", dtype={"id": str})
    from lib.core.metrics import log_loss
    assert log_loss(oof["target"].to_numpy(), oof.iloc[:, 3:].to_numpy()) == pytest.approx(got["log_loss"], rel=1e-9)


def test_averaging_refuses_mixes_that_make_no_sense():
    base = dict(backbone="test_resnet", epochs=6)
    for bad, msg in (({"swa_epochs": 2, "ema_epochs": 1.0}, "one average of the weights at a time"),
                     ({"swa_epochs": 2, "average_top_k": 3}, "two averages of the epochs' weights"),
                     ({"average_top_k": 3, "best_epoch": "monitor"}, "leave best_epoch 'last'"),
                     ({"swa_epochs": 2, "patience": 2}, "an early stop would cut"),
                     ({"swa_lr": 1e-3}, "it needs swa_epochs"),
                     ({"swa_epochs": 6, "swa_lr": 1e-3}, r"swa_epochs 6: averages 2\.\.5 epochs"),
                     ({"swa_epochs": 7}, r"swa_epochs 7: averages 2\.\.6"),
                     ({"average_top_k": 1}, "for one, use best_epoch monitor")):
        with pytest.raises(ValueError, match=msg):
            TrainConfig(**base, **bad)
    TrainConfig(**base, swa_epochs=6)                      # the last 6 of 6 epochs of the schedule
    TrainConfig(**base, average_top_k=3, patience=2)       # top-k of what early stopping kept

