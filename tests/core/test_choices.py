"""lib.core.choices: the names a recipe picks from are exactly what the registries above implement."""
from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
import timm.optim

from lib.core import choices
from lib.data.augment import AUGMENTATIONS
from lib.model.losses import LOSSES
from lib.model.tta import TTA_OPS
from lib.train.sampler import SAMPLERS
from lib.train.stages import SCHEDULES


def test_each_registry_implements_exactly_the_names_a_recipe_may_pick():
    assert tuple(AUGMENTATIONS) == choices.AUGMENTATIONS
    assert tuple(TTA_OPS) == choices.TTA_OPS
    assert set(LOSSES) == set(choices.LOSS_ARGS)
    for name, loss in LOSSES.items():  # the arguments a recipe's loss_args are checked against
        assert tuple(inspect.signature(loss).parameters) == choices.LOSS_ARGS[name], name
    assert tuple(SCHEDULES) == choices.SCHEDULES and tuple(SAMPLERS) == choices.SAMPLERS


def test_every_optimizer_name_and_argument_is_one_timm_takes():
    """opt is passed to timm's create_optimizer_v2 as it is, opt_args as its keyword arguments."""
    assert set(choices.OPT_ARGS) <= set(timm.optim.list_optimizers())
    for name, args in choices.OPT_ARGS.items():
        takes = inspect.signature(timm.optim.get_optimizer_class(name, bind_defaults=False)).parameters
        assert "foreach" in takes and set(args) <= set(takes) - {"params", "lr", "weight_decay", "foreach"}, name


def test_direction_says_which_way_is_better():
    assert choices.direction("log_loss") == -1 and choices.direction("valid_loss") == -1
    assert choices.direction("accuracy") == 1 and choices.direction("f1_macro") == 1
    assert set(choices.MONITORS) <= set(choices.GREATER_IS_BETTER)
    with pytest.raises(ValueError, match="metric 'auc'"):
        choices.direction("auc")


def test_a_recipe_is_made_and_checked_without_torch_or_albumentations():
    probe = ("import sys; from lib.core.config import TrainConfig\n"
             "TrainConfig(loss='focal', loss_args={'gamma': 1.0})\n"
             "bad = None\ntry: TrainConfig(loss='focal', loss_args={'beta': 1})\nexcept ValueError as e: bad = str(e)\n"
             "print(sorted(m for m in ('torch', 'albumentations', 'fastai', 'timm') if m in sys.modules), bad)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.startswith("[] ") and "loss_args ['beta'] do not fit loss 'focal'" in out, out
