"""lib.model.optim: layer-wise learning-rate decay reaches the optimizer's groups through fastai's
scheduler, and a compiled model trains with its compiled graphs cached on disk."""
from __future__ import annotations

import os

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file

from lib.core.config import TrainConfig
from lib.core.paths import repo_root
from lib.model.optim import compile_model, lr_scales, param_groups
from lib.train.loop import fit, setup_run, train_fold

TINY = dict(backbone="test_convnext", n_folds=3, fold=0, img_size=32, batch_size=32, epochs=1, lr=3e-3,
            progress=False, verbose=False, num_workers=0)
TINY["precision"] = "fp32"  # figures that must not depend on whether this CPU has native bf16 (lib.core.precision)


def test_layer_decay_scales_fall_from_the_head():
    model = timm.create_model("test_convnext", num_classes=5)
    plain = param_groups(model, 0.05)
    assert set(lr_scales(plain)) == {1.0} and {g["weight_decay"] for g in plain} == {0.0, 0.05}
    groups = param_groups(model, 0.05, layer_decay=0.5)
    scales = lr_scales(groups)
    head = [g for g in groups if any(p is model.head.fc.weight for p in g["params"])][0]
    stem = [g for g in groups if any(p is model.stem[0].weight for p in g["params"])][0]
    assert head["lr_scale"] == 1.0 and stem["lr_scale"] == scales.min() < 0.05
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="group_matcher"):
        param_groups(torch.nn.Linear(3, 2), 0.05, layer_decay=0.5)


def test_training_sets_each_group_lr_times_its_scale(digits_comp, tmp_path):
    run = setup_run(TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path), layer_decay=0.6, **TINY))
    fit(run)
    lrs = np.array([pg["lr"] for pg in run.learn.opt.opt.param_groups])
    scales = np.array(run.learn.opt.scales)
    assert len(set(scales.round(6))) > 3 and lrs.max() > 0
    np.testing.assert_allclose(lrs / lrs[np.argmax(scales)], scales / scales.max(), rtol=1e-9)
    with pytest.raises(ValueError, match="layer_decay"):
        TrainConfig(layer_decay=1.5)


def test_a_compiled_run_trains_like_eager_saves_plain_weights_and_caches_its_graphs(digits_comp, tmp_path,
                                                                                     monkeypatch):
    cache = tmp_path / "inductor"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(cache))
    recipe = dict(data_dir=str(digits_comp), **{**TINY, "backbone": "test_resnet"})
    eager = train_fold(TrainConfig(runs_dir=str(tmp_path / "eager"), **recipe))
    compiled = train_fold(TrainConfig(runs_dir=str(tmp_path / "compiled"), compile=True, **recipe))
    assert compiled["complete"]
    for a, b in zip(eager["epochs"], compiled["epochs"]):  # same seed, same arithmetic up to fusion rounding
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3)
        assert b["valid_loss"] == pytest.approx(a["valid_loss"], rel=1e-2)
    weights = load_file(tmp_path / "compiled" / "test_resnet_f0" / "model.safetensors")
    plain = timm.create_model("test_resnet", num_classes=10).state_dict()
    assert set(weights) == set(plain)  # no "_orig_mod." prefixes: re-prediction loads it into a plain model
    assert any(p.is_file() for p in cache.rglob("*")), "Inductor wrote no compiled graph to the cache folder"


def test_compiling_leaves_the_process_environment_alone(monkeypatch):
    """The cache folder is the caller's setting (the grid puts it in its runs' environment: lib.ops.jobs.run_env)."""
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    before = dict(os.environ)
    compile_model(torch.nn.Linear(3, 2))
    after = dict(os.environ)
    # torch itself records its default (in the temp dir) for its compile workers; nothing else changes
    assert not after.pop("TORCHINDUCTOR_CACHE_DIR", "").startswith(str(repo_root())) and after == before
