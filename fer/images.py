"""Decoding uploaded images safely: format allow-list, size limits, EXIF orientation, first GIF frame."""

from __future__ import annotations

import io
import warnings

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


def decode_image(data: bytes, max_pixels: int = 40_000_000) -> np.ndarray:
    """Decode bytes into an (H, W, 3) uint8 RGB array, EXIF orientation applied.

    Raises:
        EmptyImage: no bytes.
        UnsupportedImage: not an image, or a format outside JPEG/PNG/WebP/BMP/GIF.
        ImageTooLarge: more than `max_pixels` pixels (checked from the header, before decoding,
            so decompression bombs never allocate).
        ImageError: a truncated or corrupt file of an allowed format.
    """
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
    return np.ascontiguousarray(rgb)
