"""`decode_image` directly: formats, limits, EXIF orientation, transparency, 16-bit depth."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fer.images import EmptyImage, ImageError, ImageTooLarge, UnsupportedImage, decode_image


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_rgb_out_for_every_allowed_format():
    src = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    for fmt in ("PNG", "JPEG", "WEBP", "BMP", "GIF"):
        rgb = decode_image(encode(src, fmt))
        assert rgb.shape == (20, 30, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous, fmt


def test_refusals_carry_their_http_status_and_code():
    with pytest.raises(EmptyImage) as e:
        decode_image(b"")
    assert (e.value.status, e.value.code) == (400, "empty_upload")
    with pytest.raises(UnsupportedImage) as e:
        decode_image(b"%PDF-1.4 not an image")
    assert e.value.status == 415
    tiff = encode(Image.new("RGB", (8, 8)), "TIFF")
    with pytest.raises(UnsupportedImage, match="TIFF images are not supported"):
        decode_image(tiff)
    with pytest.raises(ImageTooLarge, match="the limit is 100"):
        decode_image(encode(Image.new("RGB", (20, 20)), "PNG"), max_pixels=100)
    truncated = encode(Image.new("RGB", (64, 64), (200, 10, 10)), "JPEG")[:200]
    with pytest.raises(ImageError):
        decode_image(truncated)


def test_exif_orientation_is_applied():
    im = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    assert decode_image(encode(im, "JPEG", exif=exif)).shape == (40, 20, 3)


def test_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert (decode_image(encode(rgba, "PNG")) == 255).all()


def test_16_bit_grayscale_keeps_its_contrast():
    deep = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    rgb = decode_image(encode(Image.fromarray(deep), "PNG"))
    assert rgb[0, 0, 0] < 10 and rgb[-1, -1, 0] > 245  # not clipped to white


def test_upright_jpegs_take_the_opencv_path_with_the_same_pixels_and_reduction_as_pil():
    from conftest import EXAMPLES

    from fer.images import decode_photo

    data = (EXAMPLES / "astronaut.jpg").read_bytes()
    ours, pil = decode_photo(data).rgb, np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert ours.shape == pil.shape and np.abs(ours.astype(int) - pil).mean() < 1.0  # two libjpeg builds
    # A 12 MP photo: decoded at the reduction PIL's draft picks (1/4 keeps the long side >= 960).
    big = encode(Image.open(io.BytesIO(data)).resize((4000, 3000)), "JPEG", quality=90)
    photo = decode_photo(big)
    draft = Image.open(io.BytesIO(big))
    draft.draft("RGB", (960, 720))
    assert photo.rgb.shape == (draft.size[1], draft.size[0], 3) == (750, 1000, 3)
    assert (photo.width, photo.height) == (4000, 3000)
    # Truncated (no end marker) still gets the PIL path's error, not a half-grey image.
    with pytest.raises(ImageError, match="corrupt or truncated"):
        decode_photo(big[: len(big) // 2])
