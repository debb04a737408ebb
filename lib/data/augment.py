"""Augmentation presets by name (albumentations 2.x), normalised with the backbone's mean/std.

Inputs are ``uint8[S, S, 3]`` images from the pre-resized cache (or decoded the same way), S =
``presize`` x ``size`` (``lib.data.dataset``: S = size by default); outputs are ``FloatTensor[3, size,
size]``: the presets' crops and resizes bring every image to ``size``. MixUp and CutMix act on batches
and live in training (``lib.train.loop``), not here.

    none       resize only (validation, test): no flips, whatever the flip settings
    light      random-resized crop (scale 0.7-1), the flips
    medium     + small affine, colour jitter, coarse dropout
    heavy      + stronger crops and affine, blur/noise, larger dropout
    doc_noise  for clean-train / noisy-test sets (documents): the flips, free rotation, gaussian
               noise, blur, colour shifts, JPEG artefacts
    randaugment, autoaugment, trivialaugment
               random-resized crop (scale 0.5-1), the flips, then a learned policy on PIL images:
               timm's RandAugment (rand-m9-n2-mstd0.5) or AutoAugment (ImageNet policy), or
               torchvision's TrivialAugmentWide (albumentations has no exact equivalents)

The flips are settings of the recipe (``lib.core.config``), honoured by every preset but ``none``:
``hflip`` (HorizontalFlip, p 0.5; on by default), ``vflip`` (VerticalFlip, p 0.5) and ``rot90``
(RandomRotate90, p 1: 0, 90, 180 or 270 degrees, uniformly; with both flips, all 8 rotations and
mirror images of the square equally often). They go where the preset flipped before these settings:
after the crop (light, medium, heavy), after the resize (doc_noise, which keeps its own chances:
rotations p 0.75, vertical flips p 0.25, as it had them; its recipe turns all three on). Turn
``hflip`` off for images that are not mirror-symmetric (digits, text); a TTA op needs its flip in
training (``lib.predict.inference.check_tta_ops``).
"""
from __future__ import annotations

import random

import albumentations as A
import numpy as np
import torch
from PIL import Image
from timm.data.auto_augment import auto_augment_transform, rand_augment_transform
from torchvision.transforms import TrivialAugmentWide

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def flip_ops(hflip: bool, vflip: bool, rot90: bool, p_rot90: float = 1.0, p_vflip: float = 0.5) -> list:
    """The flips asked for, in this order: 90-degree rotations, horizontal flip (p 0.5), vertical flip."""
    return (([A.RandomRotate90(p=p_rot90)] if rot90 else []) + ([A.HorizontalFlip(p=0.5)] if hflip else [])
            + ([A.VerticalFlip(p=p_vflip)] if vflip else []))


def _none(s, flips):
    return [A.Resize(s, s)]


def _light(s, flips):
    return [A.RandomResizedCrop(size=(s, s), scale=(0.7, 1.0)), *flip_ops(**flips)]


def _medium(s, flips):
    return [
        A.RandomResizedCrop(size=(s, s), scale=(0.5, 1.0)),
        *flip_ops(**flips),
        A.Affine(rotate=(-10, 10), translate_percent=(-0.05, 0.05), p=0.5),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.5),
        A.CoarseDropout(num_holes_range=(1, 2), hole_height_range=(0.1, 0.2), hole_width_range=(0.1, 0.2), p=0.3),
    ]


def _heavy(s, flips):
    return [
        A.RandomResizedCrop(size=(s, s), scale=(0.35, 1.0)),
        *flip_ops(**flips),
        A.Affine(rotate=(-20, 20), translate_percent=(-0.1, 0.1), shear=(-8, 8), p=0.7),
        A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05, p=0.7),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.GaussNoise(std_range=(0.02, 0.08))], p=0.3),
        A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.1, 0.25), hole_width_range=(0.1, 0.25), p=0.5),
    ]


def _doc_noise(s, flips):
    return [
        A.Resize(s, s),
        *flip_ops(**flips, p_rot90=0.75, p_vflip=0.25),
        A.Affine(rotate=(-30, 30), scale=(0.85, 1.1), fill=255, p=0.6),
        A.OneOf([A.GaussNoise(std_range=(0.05, 0.25)), A.ISONoise(), A.MultiplicativeNoise()], p=0.7),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 7)), A.MotionBlur(blur_limit=(3, 7))], p=0.4),
        A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.4, hue=0.1, p=0.7),
        A.ImageCompression(quality_range=(30, 90), p=0.3),
    ]


class PilPolicy(A.ImageOnlyTransform):
    """A learned-policy augmentation that works on PIL images, as an albumentations op on uint8[H, W, 3]:
    timm's RandAugment (``rand-m9-n2-mstd0.5``) or AutoAugment (ImageNet policy), or torchvision's
    TrivialAugmentWide. Their randomness comes from the global ``random`` / torch generators, which
    are seeded here from the pipeline's own generator (and restored), so a run replays identically."""

    def __init__(self, policy: str, size: int, p: float = 1.0):
        super().__init__(p=p)
        self.policy, self.size = policy, size
        hparams = {"translate_const": int(size * 0.45), "img_mean": (124, 116, 104)}
        if policy == "randaugment":
            self.op = rand_augment_transform("rand-m9-n2-mstd0.5", hparams)
        elif policy == "autoaugment":
            self.op = auto_augment_transform("original", hparams)
        elif policy == "trivialaugment":
            self.op = TrivialAugmentWide()
        else:
            raise ValueError(f"unknown policy {policy!r}: randaugment, autoaugment or trivialaugment")

    def apply(self, img, **params):

        seed = self.py_random.randrange(2**32)
        state = random.getstate()
        try:
            random.seed(seed)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return np.asarray(self.op(Image.fromarray(img)))
        finally:
            random.setstate(state)

    def get_transform_init_args_names(self):
        return ("policy", "size")


def _policy(name):
    """A preset: random-resized crop (scale 0.5-1), the flips, then the learned policy ``name``."""
    return lambda s, flips: [A.RandomResizedCrop(size=(s, s), scale=(0.5, 1.0)), *flip_ops(**flips),
                             PilPolicy(name, s)]


AUGMENTATIONS = {"none": _none, "light": _light, "medium": _medium, "heavy": _heavy, "doc_noise": _doc_noise,
                 "randaugment": _policy("randaugment"), "trivialaugment": _policy("trivialaugment"),
                 "autoaugment": _policy("autoaugment")}


def get_augment(name: str, size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD, hflip: bool = True,
                vflip: bool = False, rot90: bool = False) -> A.Compose:
    """Compose for preset ``name`` at ``size`` px with the flips asked for (ignored by ``none``),
    ending in Normalize(mean, std) and ToTensorV2."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; choose one of {sorted(AUGMENTATIONS)}")
    ops = AUGMENTATIONS[name](int(size), {"hflip": hflip, "vflip": vflip, "rot90": rot90})
    return A.Compose(ops + [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), A.ToTensorV2()])
