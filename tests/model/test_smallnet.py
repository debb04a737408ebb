"""lib.model.smallnet: the airnet_* models in timm's registry, through the kit's build, weights and training paths."""
from __future__ import annotations

import json

import pytest
import timm
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

import lib.model.backbones  # noqa: F401  (the kit's import registers the models)
from lib.core.config import TrainConfig
from lib.model.backbones import GeM, create_backbone, save_weights
from lib.model.factory import build_model
from lib.model.smallnet import AirNet, WhiteningStem

NAMES = ["airnet_tiny", "airnet_small"]


def _trained_once(model: torch.nn.Module, size: int = 28) -> torch.nn.Module:
    """One training-mode forward on correlated images: the whitening stem initialises itself."""
    torch.manual_seed(0)
    x = F.avg_pool2d(torch.randn(16, 3, size + 2, size + 2), 3, stride=1)
    model.train()(x)
    return model.eval()


def test_registered_under_timm_names():
    assert set(NAMES) <= set(timm.list_models("airnet*"))
    for name in NAMES:
        assert timm.is_model(name)
        cfg = timm.data.resolve_data_config({}, model=timm.create_model(name))
        assert cfg["input_size"] == (3, 32, 32) and len(cfg["mean"]) == 3 and len(cfg["std"]) == 3


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [28, 32])
def test_logits_and_features_shapes(name, size):
    model = timm.create_model(name, num_classes=7).eval()
    x = torch.randn(2, 3, size, size)
    feats = model.forward_features(x)
    assert feats.shape == (2, model.num_features, 3, 3)
    assert model(x).shape == (2, 7)
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
    assert model.get_classifier() is model.fc and model.get_classifier(name_only=True) == "fc"


def test_reset_classifier_and_pools():
    model = timm.create_model("airnet_tiny", num_classes=10).eval()
    x = torch.randn(2, 3, 28, 28)
    model.reset_classifier(5)
    assert model(x).shape == (2, 5) and model.global_pool.pool_type == "max"
    model.reset_classifier(3, global_pool="catavgmax")
    assert model(x).shape == (2, 3) and model.fc.in_features == 2 * model.num_features
    model.reset_classifier(0)
    assert model(x).shape == (2, model.head_hidden_size)


def test_kit_build_path_takes_pool_and_drop_rate():
    cfg = TrainConfig(backbone="airnet_tiny", img_size=28, pool="avgmax", drop_rate=0.3,
                      model_kwargs={"widths": [16, 32, 64]})
    model, data_cfg = build_model(cfg, 10)
    assert isinstance(model, AirNet) and model.drop_rate == 0.3 and model.global_pool.pool_type == "avgmax"
    assert model.num_features == 64 and len(data_cfg["mean"]) == 3
    assert model.eval()(torch.randn(2, 3, 28, 28)).shape == (2, 10)
    model, _ = create_backbone("airnet_tiny", 4, pool="gem")
    assert any(isinstance(m, GeM) for m in model.modules())
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    with pytest.raises(ValueError, match="airnet_tiny.*model_kwargs"):
        create_backbone("airnet_tiny", 4, model_kwargs={"channels": [8]})
    with pytest.raises(ValueError, match="stochastic depth"):
        create_backbone("airnet_tiny", 4, drop_path_rate=0.1)
    with pytest.raises(ValueError, match="img_size 8 does not fit airnet_tiny"):
        build_model(cfg.replace(img_size=8), 10)


def test_whitening_stem_whitens_and_freezes():
    stem = WhiteningStem()
    assert not stem.conv.weight.requires_grad and stem.conv.bias.requires_grad and not stem.whitened
    torch.manual_seed(0)
    x = F.avg_pool2d(torch.randn(64, 3, 18, 18), 3, stride=1) * 3 + 1  # correlated pixels, off-centre
    stem.eval()(x)
    assert not stem.whitened  # eval forwards leave it alone
    stem.train()(x)
    assert stem.whitened
    z = F.conv2d(x, stem.conv.weight, stem.conv.bias).permute(0, 2, 3, 1).reshape(-1, 24)
    torch.testing.assert_close(z.mean(0), torch.zeros(24), atol=1e-4, rtol=0)
    cov = torch.cov(z[:, :12].T)  # the 12 directions of a 3 x 2 x 2 patch; the other 12 are their negatives
    torch.testing.assert_close(cov, torch.eye(12) * cov.diagonal().mean(), atol=0.02, rtol=0)
    assert cov.diagonal().min() > 0.95
    torch.testing.assert_close(stem.conv.weight[12:], -stem.conv.weight[:12])
    before = stem.conv.weight.clone()
    stem(x * 2)
    assert torch.equal(stem.conv.weight, before)  # initialised once


def test_grey_images_get_no_noise_filters():
    """Three equal channels have 4 patch directions, not 12: the rest get zero filters, not amplified noise."""
    stem = WhiteningStem()
    torch.manual_seed(0)
    stem.train()(F.avg_pool2d(torch.randn(32, 1, 18, 18), 3, stride=1).expand(-1, 3, -1, -1))
    assert int((stem.conv.weight.flatten(1).abs().sum(1) > 0).sum()) == 8


@pytest.mark.parametrize("name", NAMES)
def test_local_safetensors_round_trip_through_timm(tmp_path, name):
    trained = _trained_once(timm.create_model(name, num_classes=10))
    path = save_weights(trained, tmp_path / f"{name}.safetensors")
    x = torch.randn(2, 3, 28, 28)
    # timm's own loader, as the kit calls it: same head kept, another number of classes re-made
    same = timm.create_model(name, num_classes=10, pretrained=True,
                             pretrained_cfg_overlay=dict(file=str(path), num_classes=10)).eval()
    torch.testing.assert_close(same(x), trained(x))
    other = timm.create_model(name, num_classes=3, pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(path), num_classes=10)).eval()
    assert other(x).shape == (2, 3) and other.stem.whitened
    torch.testing.assert_close(other.forward_features(x), trained.forward_features(x))
    # the kit's path: it reads the head's size from the file
    kit, _ = create_backbone(name, 7, pretrained=path)
    assert kit.fc.out_features == 7 and torch.equal(kit.stem.conv.weight, trained.stem.conv.weight)
    weight = kit.stem.conv.weight.clone()
    kit.train()(x)
    assert torch.equal(kit.stem.conv.weight, weight)  # loaded whitening is not redone
    # one input channel: timm folds the first conv's RGB weights into one
    grey, data_cfg = create_backbone(name, 7, pretrained=path, in_chans=1)
    assert grey.eval()(torch.randn(2, 1, 28, 28)).shape == (2, 7) and len(data_cfg["mean"]) == 1


def test_tiny_training_run_learns_and_exports(digits_comp, tmp_path):
    """The kit's own path: train_fold on the digits demo (10 classes), then ONNX through lib.ops.export."""
    ort = pytest.importorskip("onnxruntime")
    from lib.ops.onnx_export import check_onnx, export_onnx
    from lib.train.loop import train_fold
    m = train_fold(TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path), backbone="airnet_tiny", n_folds=3,
                               fold=0, img_size=28, batch_size=16, epochs=5, lr=8e-3, pool="max", ema=0.9,
                               progress=False, verbose=False, num_workers=0))
    assert m["complete"] and m["accuracy"] > 0.5, m  # chance is 0.1
    run = tmp_path / "airnet_tiny_f0"
    saved = load_file(run / "model.safetensors")  # the EMA weights, validated and kept, have the whitening
    assert saved["stem.whitened"] and saved["stem.conv.weight"].abs().sum() > 0
    path = export_onnx(run, tmp_path / "m.onnx")
    assert json.loads((tmp_path / "m.onnx.json").read_text())["backbone"] == "airnet_tiny"
    assert check_onnx(run, path, n=32) <= 1e-4
    probs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"image": torch.zeros(3, 3, 28, 28).numpy()})[0]
    assert probs.shape == (3, 10)


def test_bench_script_compares_recipes(bench_script, digits_comp, tmp_path):
    """bench/small_backbone.py end to end on the digits demo: folds made as 01_eda would, two recipes, a table."""
    recipes = []
    for name, extra in (("ref", {"backbone": "test_resnet", "img_size": 24}),
                        ("small", {"backbone": "airnet_tiny", "img_size": 28, "pool": "max"})):
        recipes.append(tmp_path / f"{name}.yaml")
        recipes[-1].write_text(yaml.safe_dump({**extra, "batch_size": 16, "epochs": 1, "precision": "bf16"}))
    out = bench_script("small_backbone").main(["--data-dir", str(digits_comp), "--runs-dir", str(tmp_path / "runs"),
                                                "--params", *map(str, recipes), "--threads", "1"])
    assert (digits_comp / "folds.csv").exists() and (digits_comp / "eda" / "groups.csv").exists()
    ref, small = out["rows"]
    assert ref["backbone"] == "test_resnet" and small["backbone"] == "airnet_tiny" and small["epochs"] == 1
    assert small["images_seen"] == len(range(0, small["train_images"] - 15, 16)) * 16
    assert small["train_tflops"] == pytest.approx(3 * small["forward_gflops"] * small["images_seen"] / 1e3)
    assert 0.04 < small["forward_gflops"] < 0.06 and small["interleaved_img_s"] > 0
    assert "| small / ref (ratio; difference for scores) |" in out["table"]
    assert json.loads((tmp_path / "runs" / "small_backbone.json").read_text())["rows"][1]["run"] == "small_f0"
