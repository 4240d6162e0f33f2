"""fer.yunet against OpenCV's own FaceDetectorYN: the same faces, boxes, landmarks and scores."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import EXAMPLES

from fer.faces import DETECT_SIDE, yunet_path
from fer.yunet import YuNet


def opencv_rows(bgr: np.ndarray) -> np.ndarray:
    det = cv2.FaceDetectorYN.create(str(yunet_path()), "", (bgr.shape[1], bgr.shape[0]), 0.7, 0.3, 5000)
    _, rows = det.detect(bgr)
    return np.zeros((0, 15), np.float32) if rows is None else rows


def images():
    for name in ("astronaut.jpg", "grace_hopper.jpg", "group.jpg"):
        bgr = cv2.imread(str(EXAMPLES / name))
        scale = min(1.0, DETECT_SIDE / max(bgr.shape[:2]))
        bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else bgr
        yield name, bgr
        yield f"{name} cut to an odd size", np.ascontiguousarray(bgr[7 : bgr.shape[0] - 13, 5 : bgr.shape[1] - 22])
    yield "noise", np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)


@pytest.mark.parametrize("name,bgr", list(images()), ids=lambda v: v if isinstance(v, str) else "")
def test_the_same_detections_as_opencv(name, bgr):
    ours, ref = YuNet(yunet_path()).detect(bgr), opencv_rows(bgr)
    assert len(ours) == len(ref), name
    order = lambda rows: rows[np.lexsort((rows[:, 1], rows[:, 0]))]  # noqa: E731 - both in one order
    ours, ref = order(ours), order(ref)
    assert np.abs(ours[:, :14] - ref[:, :14]).max(initial=0) < 0.5  # boxes and landmarks, pixels
    assert np.abs(ours[:, 14] - ref[:, 14]).max(initial=0) < 1e-3  # scores
    if name.startswith("group"):
        assert len(ours) == 3
