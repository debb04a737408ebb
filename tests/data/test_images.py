"""lib.data.images: every image mode to RGB, EXIF orientation, reduced-scale decoding, clear errors."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lib.data.images import BadImageError, probe_image, read_image


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


def _huge_png(path, w=20_000, h=10_000):
    """A PNG whose header declares w x h pixels (200 MP): what a decompression bomb looks like."""
    import struct
    import zlib
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = struct.pack(">II", w, h) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(bytes(data))


def test_images_over_the_pixel_limit_are_reported_not_decoded(tmp_path):
    p = tmp_path / "bomb.png"
    _huge_png(p)
    assert "decompression bomb" in probe_image(str(p))["problem"]
    with pytest.raises(BadImageError, match="bomb.png: over the 178,956,970-pixel limit"):
        read_image(p)
