import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lib.tta import TTA_OPS, get_tta, predict_tta


def _images(b=4, h=12, w=12, seed=0):
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _loader(x, batch_size=3):
    labels = torch.zeros(len(x), dtype=torch.long)
    return DataLoader(TensorDataset(x, labels), batch_size=batch_size)


def _pool_linear(c=5):
    torch.manual_seed(0)
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, c))


def _conv(c=5):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(c))


def test_flips_match_numpy():
    x = _images(h=6, w=8)
    hflip, vflip = get_tta(["hflip", "vflip"])
    assert np.array_equal(hflip(x).numpy(), x.numpy()[..., ::-1])
    assert np.array_equal(vflip(x).numpy(), x.numpy()[..., ::-1, :])


def test_rot_ops_compose():
    x = _images()
    ident, r90, r180, r270 = get_tta(["identity", "rot90", "rot180", "rot270"])
    assert torch.equal(r90(r90(r90(r90(x)))), x)
    assert torch.equal(r90(r90(x)), r180(x))
    assert torch.equal(r270(r90(x)), ident(x))
    assert not torch.equal(r90(x), x)
    assert torch.equal(r180(x), x.flip(-1).flip(-2))


def test_rot90_needs_square_images():
    x = _images(h=8, w=10)
    assert get_tta(["rot180"])[0](x).shape == x.shape
    for name in ("rot90", "rot270"):
        with pytest.raises(ValueError, match=r"square images \(H == W\), got H=8, W=10"):
            get_tta([name])[0](x)


@pytest.mark.parametrize("name", ["scale0.9", "scale1.1", "scale0.5", "scale1.5", "scale2"])
def test_scale_ops_keep_shape(name):
    x = _images(h=12, w=16)
    (op,) = get_tta([name])
    out = op(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, x)
    const = torch.full_like(x, 0.7)
    assert torch.allclose(op(const), const)  # crop / reflect-pad add no new values


def test_scale_crops_the_center():
    x = torch.zeros(1, 3, 8, 8)
    x[..., 3:5, 3:5] = 1.0
    out = get_tta(["scale2"])[0](x)  # 16x16 upscale, center 8x8 crop: the blob doubles in size
    assert torch.allclose(out[..., 3:5, 3:5], torch.ones(1))
    assert out[..., 2:6, 2:6].mean() > 0.7 > x[..., 2:6, 2:6].mean()  # bilinear edges blur a bit
    assert out[..., 0, :].abs().max() < 1e-6 and out[..., :, 0].abs().max() < 1e-6
    assert torch.equal(get_tta(["scale1.0"])[0](x), x)


def test_unknown_op_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown TTA op 'transpose'.*identity, hflip, vflip"):
        get_tta(["hflip", "transpose"])
    for bad in ("scale0", "scale-1", "scalex"):
        with pytest.raises(ValueError, match="scale<factor>"):
            get_tta([bad])
    assert set(TTA_OPS) == {"identity", "hflip", "vflip", "rot90", "rot180", "rot270"}


def test_flip_invariant_model_gives_same_output():
    x, model = _images(b=7), _pool_linear()
    base = predict_tta(model, _loader(x), ["identity"], "cpu", progress=False)
    both = predict_tta(model, _loader(x), ["identity", "hflip"], "cpu", progress=False)
    assert base.shape == (7, 5) and base.dtype == np.float64
    assert np.allclose(base.sum(axis=1), 1.0)
    assert np.allclose(base, both, atol=1e-6)
    with torch.no_grad():
        assert np.allclose(base, torch.softmax(model(x), 1).numpy(), atol=1e-6)


@pytest.mark.parametrize("space", ["prob", "logit"])
def test_conv_model_sees_the_flip_and_averages_in_space(space):
    x, model = _images(b=5), _conv()
    model(x)  # materialise the lazy layer
    model.train()
    base = predict_tta(model, _loader(x), ["identity"], "cpu", progress=False)
    both = predict_tta(model, _loader(x, 2), ["identity", "hflip"], "cpu", space=space,
                       progress=False)
    assert not np.allclose(base, both, atol=1e-4)
    assert model.training  # mode restored
    with torch.no_grad():
        lp = torch.stack([torch.log_softmax(model(x), 1), torch.log_softmax(model(x.flip(-1)), 1)])
    expected = lp.exp().mean(0) if space == "prob" else torch.softmax(lp.mean(0), 1)
    assert np.allclose(both, expected.numpy(), atol=1e-6)


def test_predict_tta_accepts_callables_and_rejects_bad_space():
    x, model = _images(b=3), _pool_linear()
    out = predict_tta(model, _loader(x), [lambda t: t], "cpu", progress=False)
    assert out.shape == (3, 5)
    with pytest.raises(ValueError, match="space"):
        predict_tta(model, _loader(x), ["identity"], "cpu", space="geo", progress=False)
