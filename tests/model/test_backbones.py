import pytest
import timm
import torch

from lib.model.backbones import GeM, create_backbone, load_weights, save_weights

NAMES = ["test_resnet", "test_convnext", "test_efficientnet"]
POOLS = ["avg", "max", "avgmax", "catavgmax", "gem"]


@pytest.fixture(scope="module")
def resnet_1000():
    torch.manual_seed(0)
    return timm.create_model("test_resnet", pretrained=False).eval()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("pool", POOLS)
def test_pool_options_give_logits(name, pool):
    if name == "test_convnext" and pool == "catavgmax":  # timm's NormMlpClassifierHead refuses width-changing pools
        with pytest.raises(ValueError, match="catavgmax"):
            create_backbone(name, 7, pool=pool)
        return
    model, _ = create_backbone(name, 7, pool=pool)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 7)
    assert model.forward_head(model.forward_features(torch.randn(2, 3, 64, 64))).shape == (2, 7)
    assert any(isinstance(m, GeM) for m in model.modules()) == (pool == "gem")


def test_gem_math_and_gradient():
    x = torch.rand(2, 4, 5, 5) + 0.1
    gem = GeM()
    torch.testing.assert_close(gem(x), (x ** 3).mean((-2, -1), keepdim=True) ** (1 / 3))
    gem.p.data.fill_(1.0)
    torch.testing.assert_close(gem(x), x.mean((-2, -1), keepdim=True))
    assert torch.isfinite(GeM()(torch.zeros(1, 2, 3, 3))).all()  # eps clamp

    model, _ = create_backbone("test_resnet", 5, pool="gem")
    gem = next(m for m in model.modules() if isinstance(m, GeM))
    assert any(p is gem.p for p in model.parameters()) and gem.p.item() == 3.0
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert gem.p.grad is not None and torch.isfinite(gem.p.grad).all() and gem.p.grad.abs().item() > 0


def test_gem_refused_where_it_cannot_apply():
    with pytest.raises(ValueError, match="gem.*vit_tiny_patch16_224"):
        create_backbone("vit_tiny_patch16_224", 3, pool="gem")


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_local_weights_load_backbone_and_remake_head(tmp_path, resnet_1000, fmt):
    path = tmp_path / f"test_resnet.{fmt}"
    if fmt == "safetensors":
        save_weights(resnet_1000, path)
    else:
        torch.save(resnet_1000.state_dict(), path)
    model, _ = create_backbone("test_resnet", 7, pretrained=path)
    assert torch.equal(model.conv1[0].weight, resnet_1000.conv1[0].weight)
    assert torch.equal(model.layer4[0].bn1.running_var, resnet_1000.layer4[0].bn1.running_var)
    assert model.fc.out_features == 7
    # same number of classes: the file's head is kept
    model, _ = create_backbone("test_resnet", 1000, pretrained=str(path))
    assert torch.equal(model.fc.weight, resnet_1000.fc.weight)


def test_local_weights_keep_a_matching_head(tmp_path):
    trained, _ = create_backbone("test_resnet", 7)
    save_weights(trained, tmp_path / "fold0.safetensors")
    model, _ = create_backbone("test_resnet", 7, pretrained=tmp_path / "fold0.safetensors")
    assert torch.equal(model.fc.weight, trained.fc.weight)


@pytest.mark.parametrize("num_classes", [7, 1000])
def test_wrong_architecture_file_is_clear(tmp_path, num_classes):
    path = tmp_path / "convnext.safetensors"
    save_weights(timm.create_model("test_convnext"), path)
    with pytest.raises(ValueError) as e:
        create_backbone("test_resnet", num_classes, pretrained=path)
    assert str(path) in str(e.value) and "test_resnet" in str(e.value)


def test_wrong_shapes_file_is_clear(tmp_path, resnet_1000):
    path = tmp_path / "resnet.pth"
    torch.save(resnet_1000.state_dict(), path)
    with pytest.raises(ValueError) as e:
        create_backbone("resnet18", 7, pretrained=path)
    assert str(path) in str(e.value) and "resnet18" in str(e.value)


def test_pickled_model_is_refused(tmp_path, resnet_1000):
    path = tmp_path / "whole.pth"
    torch.save(resnet_1000, path)
    with pytest.raises(ValueError, match="state dict"):
        create_backbone("test_resnet", 7, pretrained=path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        create_backbone("test_resnet", 7, pretrained=path)


def test_unknown_name_suggests_close_ones():
    with pytest.raises(ValueError, match="test_resnet"):
        create_backbone("test_resnett", 7)
    with pytest.raises(ValueError, match="pretrained"):
        create_backbone("test_resnet", 7, pretrained=True)


def test_data_config():
    _, cfg = create_backbone("test_efficientnet", 3)
    assert len(cfg["mean"]) == 3 and len(cfg["std"]) == 3
    assert len(cfg["input_size"]) == 3 and cfg["input_size"][0] == 3
    assert {"interpolation", "crop_pct"} <= set(cfg)
    model, cfg = create_backbone("test_resnet", 3, in_chans=1)
    assert len(cfg["mean"]) == 1 and cfg["input_size"][0] == 1
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 3)


def test_save_and_load_weights(tmp_path):
    model, _ = create_backbone("test_convnext", 4, pool="gem")
    with torch.no_grad():
        next(m for m in model.modules() if isinstance(m, GeM)).p.fill_(4.5)
    x = torch.randn(2, 3, 64, 64)
    want = model.eval()(x)
    path = save_weights(model, tmp_path / "m.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary left behind
    for p in (path, tmp_path / "m.pth"):
        if p.suffix == ".pth":
            torch.save(model.state_dict(), p)
        fresh, _ = create_backbone("test_convnext", 4, pool="gem")
        torch.testing.assert_close(load_weights(fresh, p).eval()(x), want)
    with pytest.raises(ValueError, match="m.safetensors"):
        load_weights(create_backbone("test_convnext", 5, pool="gem")[0], path)
    with pytest.raises(ValueError, match="m.safetensors"):
        load_weights(create_backbone("test_convnext", 4)[0], path)  # no GeM p in the model
    with pytest.raises(FileNotFoundError):
        load_weights(model, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="safetensors"):
        save_weights(model, tmp_path / "m.pt")


def test_model_kwargs_reach_timm():
    """model_kwargs (from params) change the architecture; a name the model does not take is clear."""
    wide, _ = create_backbone("test_resnet", 5, model_kwargs={"channels": [32, 64, 64, 128]})
    plain, _ = create_backbone("test_resnet", 5)
    assert wide.num_features == 128 and plain.num_features == 96
    assert wide(torch.randn(2, 3, 48, 48)).shape == (2, 5)
    with pytest.raises(ValueError, match="test_resnet.*not_an_arg.*model_kwargs"):
        create_backbone("test_resnet", 5, model_kwargs={"not_an_arg": 1})
