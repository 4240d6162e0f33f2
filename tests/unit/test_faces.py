"""The face detector directly, on the photos that ship with the project."""

from __future__ import annotations

import numpy as np
from conftest import EXAMPLES
from PIL import Image

from fer.faces import CROP_SIDE, FaceDetector, _clip_box


def photo(name: str) -> np.ndarray:
    return np.asarray(Image.open(EXAMPLES / name).convert("RGB"))


def test_one_face_with_landmarks_and_an_aligned_crop():
    faces = FaceDetector(48).detect(photo("astronaut.jpg"))
    assert len(faces) == 1
    f = faces[0]
    x, y, w, h = f.box
    assert 150 < x < 210 and 40 < y < 100 and 60 < w < 140 and 60 < h < 180  # the face in the portrait
    assert 0.7 <= f.score <= 1 and len(f.landmarks) == 5
    assert f.crop.shape == (48, 48) and f.crop.dtype == np.uint8 and f.crop.std() > 10


def test_group_photo_largest_first_and_capped():
    det = FaceDetector(48)
    faces = det.detect(photo("group.jpg"))
    assert len(faces) == 3 and [f.area for f in faces] == sorted((f.area for f in faces), reverse=True)
    assert len(FaceDetector(48, max_faces=2).detect(photo("group.jpg"))) == 2


def test_crop_size_follows_the_model_input():
    assert FaceDetector(64).detect(photo("astronaut.jpg"))[0].crop.shape == (64, 64)


def test_no_face_in_a_blank_image_and_small_images_are_crops():
    det = FaceDetector(48)
    assert det.detect(np.full((480, 640, 3), 127, np.uint8)) == []
    faces, is_crop = det.faces_or_crop(np.full((CROP_SIDE, CROP_SIDE, 3), 90, np.uint8))
    assert is_crop and faces[0].box == (0, 0, CROP_SIDE, CROP_SIDE) and faces[0].crop.shape == (48, 48)
    faces, is_crop = det.faces_or_crop(np.full((480, 640, 3), 127, np.uint8))
    assert faces == [] and not is_crop


def test_boxes_are_clipped_to_the_image():
    assert _clip_box(-5, -5, 20, 20, 10, 10) == (0, 0, 10, 10)
    assert _clip_box(8, 8, 20, 20, 10, 10) == (8, 8, 2, 2)
