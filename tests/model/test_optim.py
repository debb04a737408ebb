"""lib.model.optim: every optimizer a recipe may name trains, layer-wise learning-rate decay reaches the
optimizer's groups through fastai's scheduler, a fine-tune's body is told from its head, and a compiled
model trains with its compiled graphs cached on disk."""
from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file

from lib.core.choices import OPT_ARGS
from lib.core.config import TrainConfig
from lib.core.paths import repo_root
from lib.model.optim import body_parameters, compile_model, lr_scales, param_groups
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


def test_each_optimizer_name_builds_and_takes_a_step_that_moves_the_weights(digits_comp, tmp_path):
    cfg = TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path), weight_decay=0.1,
                      **{**TINY, "backbone": "test_resnet", "img_size": 16})
    args = {"adamw": {"betas": [0.8, 0.9]}, "sgd": {"momentum": 0.5}}   # a recipe's opt_args, as YAML gives them
    for name in OPT_ARGS:
        learn = setup_run(cfg.replace(opt=name, opt_args=args.get(name, {}), run_name=name)).learn
        opt = learn.opt.opt
        assert type(opt) is timm.optim.get_optimizer_class(name, bind_defaults=False), name
        assert sorted(pg["weight_decay"] for pg in opt.param_groups) == [0.0, 0.1], name  # none on norms, biases
        before = [p.detach().clone() for p in learn.model.parameters()]
        learn.opt.set_hyper("lr", 0.05)
        for xb, yb in itertools.islice(learn.dls.train, 2):  # two steps: ADOPT's first only sets its moments
            learn.opt.zero_grad()
            learn.loss_func(learn.model(xb), yb).backward()
            learn.opt.step()
        # every parameter with a gradient moves (timm zero-inits each block's last norm: none behind it has one)
        moved = [not torch.equal(a, p) for a, p in zip(before, learn.model.parameters()) if p.grad.abs().sum() > 0]
        assert len(moved) > 20 and all(moved), f"{name}: {moved.count(False)} of {len(moved)} parameters did not move"
        assert all(pg["lr"] == 0.05 for pg in opt.param_groups), name
    assert opt.param_groups[0]["betas"] == (0.8, 0.9) or name != "adamw"
    sgd = setup_run(cfg.replace(opt="sgd", opt_args=args["sgd"], run_name="sgd")).learn.opt.opt.param_groups[0]
    assert (sgd["momentum"], sgd["nesterov"]) == (0.5, True)  # timm's sgd: nesterov


def test_the_body_is_all_but_the_head_and_the_norm_layers():
    model = timm.create_model("test_resnet", num_classes=5, global_pool="avg")
    body = {id(p) for p in body_parameters(model)}
    norms = {f"{m}.{n}" for m, mod in model.named_modules() if isinstance(mod, torch.nn.BatchNorm2d)
             for n, _ in mod.named_parameters()}
    trained = {n for n, p in model.named_parameters() if id(p) not in body}
    assert trained == norms | {"fc.weight", "fc.bias"} and len(norms) > 10
    assert {id(p) for p in model.parameters() if p.ndim == 4} <= body   # every conv waits
    with pytest.raises(ValueError, match="Linear has no get_classifier"):
        body_parameters(torch.nn.Linear(3, 2))


def test_training_sets_each_group_lr_times_its_scale(digits_comp, tmp_path):
    run = setup_run(TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path), layer_decay=0.6, **TINY))
    fit(run)
    lrs = np.array([pg["lr"] for pg in run.learn.opt.opt.param_groups])
    scales = np.array(run.learn.opt.scales)
    assert len(set(scales.round(6))) > 3 and lrs.max() > 0
    np.testing.assert_allclose(lrs / lrs[np.argmax(scales)], scales / scales.max(), rtol=1e-9)
    with pytest.raises(ValueError, match="layer_decay"):
        TrainConfig(layer_decay=1.5)


@pytest.mark.slow
def test_a_compiled_run_trains_like_eager_saves_plain_weights_and_caches_its_graphs(digits_comp, tmp_path,
                                                                                     monkeypatch):
    cache = tmp_path / "inductor"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(cache))
    # batches of 64: every training batch has one shape, and the ~67-image validation fold fits one batch of
    # 2 x 64; each new shape is another Inductor compile (with 32: five graphs, 61 s against 52 s on a 2-core CPU)
    recipe = dict(data_dir=str(digits_comp), **{**TINY, "backbone": "test_resnet", "batch_size": 64})
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
