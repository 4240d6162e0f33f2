"""Decoding uploaded images safely: format allow-list, size limits, EXIF orientation, first GIF frame."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np

ALLOWED_FORMATS = {"JPEG", "PNG", "WEBP", "BMP", "GIF", "MPO"}  # MPO: multi-picture JPEG from phones


class ImageError(ValueError):
    """An upload that is not a usable image; `status` is the HTTP status the API answers with."""

    status = 400
    code = "invalid_image"


class EmptyImage(ImageError):
    code = "empty_upload"


class UnsupportedImage(ImageError):
    status = 415
    code = "unsupported_media_type"


class ImageTooLarge(ImageError):
    status = 413
    code = "image_too_large"


# Large JPEGs are decoded down to about this long side for analysis: 1.5x the detector's 640 px,
# so the smallest face it finds (14 px there) still has 21 px in the crop it is classified from.
REDUCED_SIDE = 960


@dataclass
class Photo:
    """A decoded upload: `rgb` (maybe decoded at reduced scale) and the full upright size."""

    rgb: np.ndarray
    width: int  # of the full-resolution image, after EXIF orientation
    height: int

    @property
    def scale(self) -> tuple[float, float]:
        """Full-size pixels per decoded pixel, in x and y (1.0 unless decoded reduced)."""
        return self.width / self.rgb.shape[1], self.height / self.rgb.shape[0]

    @property
    def pixel_scale(self) -> float:
        """Full-size pixels per decoded pixel along the long side (what detection sizes go by)."""
        return max(self.width, self.height) / max(self.rgb.shape[:2])


def decode_photo(data: bytes, max_pixels: int = 40_000_000, min_side: int | None = REDUCED_SIDE) -> Photo:
    """`decode_image`, but a JPEG larger than twice `min_side` is decoded at 1/2, 1/4 or 1/8 scale
    (libjpeg's DCT scaling, PIL's `draft`), keeping its long side at least `min_side`.

    A 12 MP phone photo then decodes at 1/4 in ~10 ms instead of ~50 ms; detection runs on ~640 px
    anyway, and the face crops come from a >= 960 px image, so small faces keep their detail.
    Boxes found on `rgb` are mapped back to full size with `scale`.
    """
    return _decode(data, max_pixels, min_side)


def decode_image(data: bytes, max_pixels: int = 40_000_000) -> np.ndarray:
    """Decode bytes into an (H, W, 3) uint8 RGB array, EXIF orientation applied.

    Raises:
        EmptyImage: no bytes.
        UnsupportedImage: not an image, or a format outside JPEG/PNG/WebP/BMP/GIF.
        ImageTooLarge: more than `max_pixels` pixels (checked from the header, before decoding,
            so decompression bombs never allocate).
        ImageError: a truncated or corrupt file of an allowed format.
    """
    return _decode(data, max_pixels, None).rgb


def _jpeg_opencv(data: bytes, w: int, h: int, min_side: int | None) -> np.ndarray | None:
    """RGB pixels of a JPEG by OpenCV, at the DCT reduction PIL's `draft` would pick; None if it fails."""
    import cv2

    reduce = 1
    while min_side and reduce < 8 and max(w, h) / (reduce * 2) >= min_side:
        reduce *= 2  # the largest 1/2, 1/4 or 1/8 that keeps the long side >= min_side
    flag = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}[reduce]  # fmt: skip
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flag | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None or bgr.ndim != 3:
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _decode(data: bytes, max_pixels: int, min_side: int | None) -> Photo:
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise EmptyImage("the uploaded file is empty")
    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(f"image refused as a decompression bomb: {e}") from None
    except UnidentifiedImageError:
        raise UnsupportedImage("the upload is not an image (supported: JPEG, PNG, WebP, BMP, GIF)") from None
    except (OSError, ValueError) as e:
        raise ImageError(f"cannot read the image: {e}") from None
    if im.format not in ALLOWED_FORMATS:
        raise UnsupportedImage(f"{im.format} images are not supported (use JPEG, PNG, WebP, BMP or GIF)")
    w, h = im.size
    if w * h > max_pixels:
        raise ImageTooLarge(f"image is {w}x{h} = {w * h:,} pixels; the limit is {max_pixels:,}")
    if w < 1 or h < 1:
        raise ImageError("image has no pixels")
    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:  # unreadable metadata of a broken file: the decode below says what is wrong
        orientation = 1
    full = (h, w) if orientation in (5, 6, 7, 8) else (w, h)  # upright, as exif_transpose makes it
    if im.format == "JPEG" and im.mode == "RGB" and orientation == 1 and data[-2:] == b"\xff\xd9":
        # The common upload: an upright, complete colour JPEG. OpenCV decodes it ~3x faster than
        # PIL does here; everything else (and any JPEG OpenCV cannot read) takes the PIL path,
        # which also owns the error messages (a missing end marker means truncated: PIL says so).
        rgb = _jpeg_opencv(data, w, h, min_side)
        if rgb is not None:
            return Photo(rgb, *full)
    if min_side and im.format in ("JPEG", "MPO") and max(w, h) > 2 * min_side:
        ratio = min_side / max(w, h)
        im.draft("RGB", (max(1, round(w * ratio)), max(1, round(h * ratio))))  # a scale >= the size asked
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im.seek(0)  # first frame of an animation
            im = ImageOps.exif_transpose(im)
            if im.mode.startswith("I;16") or im.mode == "I":
                # 16-bit grayscale (medical, scientific, some camera PNGs): PIL's convert("RGB")
                # clips at 255, which turns a normal photo almost white; scale the range instead.
                deep = np.asarray(im, dtype=np.int64)
                im = (
                    Image.fromarray((np.clip(deep, 0, 65535) >> 8).astype(np.uint8), "L")
                    if deep.max() > 255
                    else Image.fromarray(np.clip(deep, 0, 255).astype(np.uint8), "L")
                )
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                # Composite transparency on white, as a viewer shows it, rather than on black.
                rgba = im.convert("RGBA")
                bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, rgba)
            rgb = np.asarray(im.convert("RGB"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLarge(f"image refused as a decompression bomb: {e}") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"the image is corrupt or truncated: {e}") from None
    return Photo(np.ascontiguousarray(rgb), *full)
