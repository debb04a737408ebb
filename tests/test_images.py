"""lib.images: every image mode to RGB, EXIF orientation, reduced-scale decoding, clear errors."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lib.images import BadImageError, probe_image, read_image


@pytest.mark.parametrize("name", ["cmyk.jpg", "deep16.png", "palette.png"])
def test_any_mode_becomes_rgb(messy, name):
    img = read_image(messy / "train" / "기아 K5" / name)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.std() > 0


def test_exif_rotation_and_reduced_decode(messy):
    img = read_image(messy / "train" / "현대 아반떼" / "exif_rotated.jpg")
    assert img.shape[:2] == (80, 40)
    big = messy / "big.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (960, 1280, 3), np.uint8)).save(big)
    small = read_image(big, size=224)
    assert 224 <= min(small.shape[:2]) < 480                                 # decoded at 1/2 or 1/4 scale
    with pytest.raises(BadImageError, match="truncated.jpg"):
        read_image(messy / "train" / "기아 K5" / "truncated.jpg")


def test_probe_names_the_problem(messy):
    bad = probe_image(str(messy / "train" / "기아 K5" / "zero.jpg"))
    assert bad["problem"] == "zero-byte file"
    ok = probe_image(str(messy / "train" / "현대 아반떼" / "exif_rotated.jpg"))
    assert ok["problem"] == "" and (ok["width"], ok["height"]) == (40, 80)
