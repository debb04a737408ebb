"""lib.data.augment: every preset by name, normalised with the backbone's statistics, with the flips asked for."""
from __future__ import annotations

import albumentations as A
import pytest
import torch
from sklearn.datasets import load_sample_images

from lib.data.augment import AUGMENTATIONS, get_augment


@pytest.fixture(scope="module")
def photo():
    return load_sample_images().images[0][::4, ::4].copy()            # real photo, 107x160


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_preset_shape_and_type(name, photo):
    t = get_augment(name, 48)
    t.set_random_seed(0)
    x = t(image=photo)["image"]
    assert isinstance(x, torch.Tensor) and x.shape == (3, 48, 48) and x.dtype == torch.float32


def test_normalisation_uses_given_mean_std(photo):
    x = get_augment("none", 32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))(image=photo)["image"]
    assert -1.0 - 1e-6 <= float(x.min()) and float(x.max()) <= 1.0 + 1e-6
    y = get_augment("none", 32)(image=photo)["image"]                 # ImageNet statistics
    assert not torch.allclose(x, y)


def test_train_presets_vary_and_none_does_not(photo):
    outs = {}
    for name in ("none", "medium", "doc_noise"):
        t = get_augment(name, 32)
        imgs = []
        for s in range(4):
            t.set_random_seed(s)
            imgs.append(t(image=photo)["image"])
        outs[name] = max(float((imgs[0] - im).abs().mean()) for im in imgs[1:])
    assert outs["none"] == 0 and outs["medium"] > 0.05 and outs["doc_noise"] > 0.05


def test_unknown_preset_lists_the_names():
    with pytest.raises(ValueError, match="doc_noise"):
        get_augment("strong", 32)


FLIPS = {"hflip": A.HorizontalFlip, "vflip": A.VerticalFlip, "rot90": A.RandomRotate90}


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_each_flip_setting_reaches_every_preset_but_none(name):
    for flip, kind in FLIPS.items():
        for on in (True, False):
            t = get_augment(name, 32, **{**dict.fromkeys(FLIPS, False), flip: on})
            kinds = {type(op) for op in t.transforms}
            assert (kind in kinds) == (on and name != "none"), (flip, on)
            assert not kinds & (set(FLIPS.values()) - {kind}), (flip, on)     # the others stay off
    default = {type(op) for op in get_augment(name, 32).transforms} & set(FLIPS.values())
    assert default == (set() if name == "none" else {A.HorizontalFlip})      # hflip only, as before the settings


def test_doc_noise_keeps_its_own_flip_chances():
    ops = {type(op): op.p for op in get_augment("doc_noise", 32, hflip=True, vflip=True, rot90=True).transforms}
    assert (ops[A.RandomRotate90], ops[A.HorizontalFlip], ops[A.VerticalFlip]) == (0.75, 0.5, 0.25)
    ops = {type(op): op.p for op in get_augment("light", 32, hflip=True, vflip=True, rot90=True).transforms}
    assert (ops[A.RandomRotate90], ops[A.HorizontalFlip], ops[A.VerticalFlip]) == (1.0, 0.5, 0.5)



@pytest.mark.parametrize("name", ["randaugment", "trivialaugment", "autoaugment"])
def test_policy_presets_replay_from_the_seed_and_change_the_image(name, photo):
    """timm's / torchvision's PIL policies draw from global generators: seeded from the pipeline's own,
    so a dataset item replays identically, and the policy adds to what crop and flip do."""
    import random

    import numpy as np
    t = get_augment(name, 48)

    def run(s, pipeline=t):
        pipeline.set_random_state(np.random.default_rng(s), random.Random(s))
        return pipeline(image=photo)["image"]
    assert torch.equal(run(3), run(3)) and not torch.equal(run(3), run(4))
    state = random.getstate()
    run(5)
    assert random.getstate() == state  # the global generator is left as it was
    plain = A.Compose([op for op in t.transforms if type(op).__name__ != "PilPolicy"])
    assert any(not torch.equal(run(s), run(s, plain)) for s in range(4))
