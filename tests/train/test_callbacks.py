"""lib.train.callbacks: the EMA's decay from a horizon in epochs, what timm's warm-up makes of a decay, and
a fine-tune's frozen body (still through its freeze epochs, trained after)."""
from __future__ import annotations

import pytest
import torch
from fastai.callback.core import Callback
from timm.utils import ModelEmaV3

from lib.core.config import TrainConfig
from lib.model.backbones import create_backbone, save_weights
from lib.model.optim import body_parameters
from lib.train.callbacks import EMA, best_record, ema_decay, ema_horizon
from lib.train.loop import fit, setup_run


def test_ema_decay_from_a_horizon_and_back():
    assert ema_decay(2.0, 50) == pytest.approx(0.99)              # 100 steps: 1 - 1/100
    assert ema_decay(0.75, 500) == pytest.approx(1 - 1 / 375)
    assert ema_horizon(0.99, 50) == pytest.approx(2.0)
    for epochs, steps in ((0.75, 500), (1.5, 31), (3.0, 7.5)):
        assert ema_horizon(ema_decay(epochs, steps), steps) == pytest.approx(epochs)
    assert ema_decay(0.5, 1) == 0.0                                # under one step: no averaging
    assert ema_horizon(0.0, 4) == pytest.approx(0.25)              # decay 0: the last step alone


def test_timm_warmup_is_what_the_docstring_says():
    """timm's default warm-up (power 2/3) caps a stated decay long before it applies; power 1, which
    the EMA callback uses, is a running mean of the weights until the set decay takes over."""
    model = torch.nn.Linear(2, 2)
    for stated in (0.999, 0.9998):
        old = ModelEmaV3(model, decay=stated, use_warmup=True)     # the kit's EMA before ema_epochs
        assert old.get_decay(7499) == pytest.approx(0.99739, abs=1e-5)  # both end a 7,500-step run alike
    assert ModelEmaV3(model, decay=0.9998, use_warmup=True).get_decay(353_553) == pytest.approx(0.9998, abs=1e-7)
    ema = ModelEmaV3(model, decay=0.99, use_warmup=True, warmup_power=1.0)
    assert [ema.get_decay(t) for t in (1, 2, 4, 100, 101, 10_000)] == pytest.approx(
        [0.0, 0.5, 0.75, 0.99, 0.99, 0.99])                        # min(decay, 1 - 1/t) at the t-th update


def test_ema_takes_one_of_decay_or_horizon():
    with pytest.raises(ValueError, match="one of them"):
        EMA()
    with pytest.raises(ValueError, match="one of them"):
        EMA(0.99, 1.0)


def test_best_record_breaks_ties_by_the_earliest_epoch():
    hist = [{"epoch": 0, "log_loss": 0.5, "accuracy": 0.8}, {"epoch": 1, "log_loss": 0.4, "accuracy": 0.8},
            {"epoch": 2, "log_loss": 0.45, "accuracy": 0.7}]
    assert best_record(hist, "log_loss")["epoch"] == 1 and best_record(hist, "accuracy")["epoch"] == 0
    assert best_record([], "log_loss") is None
    with pytest.raises(ValueError, match="monitor 'auc'"):
        best_record(hist, "auc")


class _Weights(Callback):
    """A copy of every parameter when the run starts and after each epoch has trained, by name."""
    def before_fit(self):
        self.seen = {"start": {n: p.detach().clone() for n, p in self.learn.model.named_parameters()}}

    def after_train(self):
        self.seen[self.epoch] = {n: p.detach().clone() for n, p in self.learn.model.named_parameters()}


def test_freeze_epochs_keep_the_body_still_then_train_it(digits_comp, tmp_path):
    """A pretrained body (a weights file of another class count: the head is new), one frozen epoch of
    two: the body's weights do not change in epoch 0 (no step, no weight decay), the head's and the
    norms' do; in epoch 1 every part trains."""
    model, _ = create_backbone("test_resnet", num_classes=3)
    weights = save_weights(model, tmp_path / "pretrained.safetensors")
    cfg = TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path), backbone="test_resnet",
                      pretrained=str(weights), freeze_epochs=1, epochs=2, img_size=16, n_folds=3, batch_size=32,
                      weight_decay=0.1, progress=False, verbose=False, num_workers=0, precision="fp32")
    run = setup_run(cfg)
    body = {id(p) for p in body_parameters(run.learn.model)}
    names = {n: id(p) in body for n, p in run.learn.model.named_parameters()}
    spy = _Weights()
    run.learn.add_cb(spy)
    fit(run)
    start, one, two = spy.seen["start"], spy.seen[0], spy.seen[1]

    def moved(a, b, in_body):
        return [n for n, frozen in names.items() if frozen == in_body and not torch.equal(a[n], b[n])]
    assert moved(start, one, True) == []                                     # epoch 0: the body is still
    assert {"fc.weight", "fc.bias", "bn1.weight"} <= set(moved(start, one, False))  # head and norms train
    assert set(moved(one, two, True)) == {n for n, frozen in names.items() if frozen}  # epoch 1: all of it
    assert len(run.history) == 2
