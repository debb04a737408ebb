"""lib.model.tta: the ops on image batches, and which of them a run's training makes safe to use."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from shared import PNG_CLASSES, oof_table

from lib.core.rundir import find_runs
from lib.model.tta import TTA_OPS, get_tta
from lib.predict.inference import check_tta_ops, tta_gain


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


def _run(root, name, **params):
    """A completed run folder as far as its recipe goes: params.yaml and metrics.json."""
    d = root / name
    d.mkdir(parents=True)
    (d / "params.yaml").write_text(yaml.safe_dump({"data_dir": "data/x", "backbone": "test_resnet", "fold": 0,
                                                   "run_name": name, **params}))
    (d / "metrics.json").write_text(json.dumps({"complete": True}))


def _gain(model, tta_helps: bool):
    """tta_gain's table for ``model``: its TTA OOF closer to the labels than the plain one, or further."""
    y = np.array([0, 1, 2, 0, 1, 2])
    sure, unsure = np.eye(3)[y] * 0.6 + 0.4 / 3, np.eye(3)[y] * 0.3 + 0.7 / 3
    plain, tta = (unsure, sure) if tta_helps else (sure, unsure)
    table = tta_gain({model: oof_table(y, plain)}, {model: oof_table(y, tta)}, PNG_CLASSES)
    assert (table["log_loss_gain"].iloc[0] > 0) == tta_helps
    return table


def test_tta_ops_need_their_flips_in_training(tmp_path):
    _run(tmp_path, "digits_f0", aug="light", hflip=False)           # trained without flips
    _run(tmp_path, "digits_f1", aug="light", hflip=False, fold=1)
    _run(tmp_path, "photo_f0", aug="medium")                        # older run: its preset's hflip only
    _run(tmp_path, "doc_f0", aug="doc_noise")                       # older run: doc_noise did every flip
    _run(tmp_path, "flips_f0", aug="heavy", vflip=True)             # both flips, no rotations
    _run(tmp_path, "plain_f0", aug="none")                          # no augmentation, no flips
    runs = find_runs(tmp_path)
    with_hflip = runs[runs["model"].isin(["photo", "doc", "flips"])]
    assert check_tta_ops(runs, ["identity", "scale0.9", "scale1.1"]) == {}      # need nothing
    assert check_tta_ops(with_hflip, ["identity", "hflip"]) == {}
    assert check_tta_ops(runs[runs["model"] == "doc"], ["rot90", "rot180", "rot270", "vflip"]) == {}
    assert check_tta_ops(runs[runs["model"] == "flips"], ["rot180"]) == {}       # rot180 = both flips
    with pytest.warns(UserWarning, match="photo_f0: rot180"), pytest.raises(ValueError, match="photo"):
        check_tta_ops(with_hflip, ["identity", "rot180"])

    # refused without a measured gain, naming the runs, their ops and what to do
    refused = r"(?s)digits \(not measured\).*drop those ops from tta, or set tta_oof=True"
    with pytest.warns(UserWarning, match="digits_f0: hflip; digits_f1: hflip; plain_f0: hflip"), \
            pytest.raises(ValueError, match=refused):
        check_tta_ops(runs, ["identity", "hflip"])
    # accepted where the measured OOF gain of every such model is > 0, still with the warning
    gain = pd.concat([_gain("digits", True), _gain("plain", True), _gain("photo", False)], ignore_index=True)
    with pytest.warns(UserWarning, match="digits_f0: hflip"):
        assert check_tta_ops(runs, ["identity", "hflip"], gain) == {
            "digits_f0": ["hflip"], "digits_f1": ["hflip"], "plain_f0": ["hflip"]}
    # refused where it shows no gain for one of them
    gain = pd.concat([_gain("digits", False), _gain("plain", True)], ignore_index=True)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"digits \(log_loss_gain -"):
        check_tta_ops(runs, ["identity", "hflip"], gain)
    with pytest.raises(ValueError, match="unknown TTA op 'flip'"):
        check_tta_ops(runs, ["flip"])

