"""The libspng fast path (`attnlab.data.png`) gives Pillow's pixels, or steps aside."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from attnlab.data.images import image_to_rgb, is_color, load_rgb, open_image
from attnlab.data.png import decode_png
from attnlab.errors import DataError

pytest.importorskip("pyspng")


def _png(im: Image.Image, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", **params)
    return buf.getvalue()


def _pillow(data: bytes, size):
    im = open_image(io.BytesIO(data))
    return image_to_rgb(im, size, "x"), is_color(im)


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("size", [(13, 17), (8, 6)])
def test_fast_path_equals_pillow(mode, size):
    rng = np.random.default_rng(len(mode) + size[0])
    channels = len(mode)
    pixels = rng.integers(0, 256, (13, 17, channels), dtype=np.uint8)
    pixels[0, :3] = [0, 128, 255][:channels] if channels >= 3 else pixels[0, :3]
    data = _png(Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode))
    fast = decode_png(data)
    assert fast is not None, "a plain 8-bit PNG takes the fast path"
    rgb, color = load_rgb(data, size)
    ref_rgb, ref_color = _pillow(data, size)
    assert rgb.dtype == np.uint8 and rgb.shape == (*size, 3)
    np.testing.assert_array_equal(rgb, ref_rgb)
    assert color == ref_color == (mode == "RGB")


def test_transparency_and_interlace_match_pillow():
    rng = np.random.default_rng(1)
    im = Image.fromarray(rng.integers(0, 256, (9, 11, 3), dtype=np.uint8))
    for data in (_png(im, transparency=(1, 2, 3)), _png(im, optimize=True), _png(im, compress_level=0)):
        assert decode_png(data) is not None
        np.testing.assert_array_equal(load_rgb(data, (9, 11))[0], _pillow(data, (9, 11))[0])


@pytest.mark.parametrize("image", [
    Image.fromarray(np.arange(256, dtype=np.uint8).reshape(8, 8, 4), "RGBA"),
    Image.fromarray(np.arange(128, dtype=np.uint8).reshape(8, 8, 2), "LA"),
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).convert("P"),  # palette
    Image.fromarray((np.arange(64, dtype=np.uint16) * 1000).reshape(8, 8)),  # 16-bit grey
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) > 30),  # 1-bit
])
def test_other_pngs_go_through_pillow(image):
    data = _png(image)
    assert decode_png(data) is None
    rgb, color = load_rgb(data, (8, 8))
    ref_rgb, ref_color = _pillow(data, (8, 8))
    np.testing.assert_array_equal(rgb, ref_rgb)
    assert color == ref_color


def test_exif_orientation_goes_through_pillow():
    rng = np.random.default_rng(2)
    im = Image.fromarray(rng.integers(0, 256, (6, 10, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    data = _png(im, exif=exif)
    assert decode_png(data) is None
    rgb, _ = load_rgb(data, (10, 6))
    np.testing.assert_array_equal(rgb, np.rot90(np.asarray(im), k=-1))


def test_jpeg_is_not_a_png():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, format="JPEG")
    assert decode_png(buf.getvalue()) is None


def test_corrupt_and_truncated_pngs_are_errors(tmp_path):
    rng = np.random.default_rng(3)
    data = _png(Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)), compress_level=0)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF  # inside IDAT: libspng alone would decode it silently
    path = tmp_path / "bad.png"
    path.write_bytes(bytes(flipped))
    with pytest.raises(DataError, match=r"bad\.png.*CRC error in PNG chunk IDAT"):
        load_rgb(path, (16, 16))
    path.write_bytes(data[: len(data) - 30])
    with pytest.raises(DataError, match=r"bad\.png.*truncated"):
        load_rgb(path, (16, 16))
    with pytest.raises(DataError, match=r"missing\.png"):
        load_rgb(tmp_path / "missing.png", (16, 16))


def test_switch_off(monkeypatch):
    data = _png(Image.new("RGB", (4, 4), (1, 2, 3)))
    assert decode_png(data) is not None
    monkeypatch.setenv("ATTNLAB_PNG_DECODER", "pillow")
    assert decode_png(data) is None
