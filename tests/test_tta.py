import numpy as np
import pytest
import torch

from lib.tta import TTA_OPS, get_tta


def _images(b=4, h=12, w=12, seed=0):
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


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


