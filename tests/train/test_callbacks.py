"""lib.train.callbacks: the EMA's decay from a horizon in epochs, and what timm's warm-up makes of a decay."""
from __future__ import annotations

import pytest
import torch
from timm.utils import ModelEmaV3

from lib.train.callbacks import EMA, best_record, ema_decay, ema_horizon


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
