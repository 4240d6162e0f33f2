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


def test_detecting_at_the_min_face_scale_finds_what_full_scale_finds():
    # The default detects at the scale where a 24 px face is 14 px (fer.faces.YUNET_MIN_FACE);
    # min_face=8 detects at full scale (up to 640 px). Same faces, boxes within 8% of their size,
    # and crops close enough that the emotion model gives the same answers.
    from conftest import REPO

    from fer.inference import Predictor

    predictor = Predictor(REPO / "models" / "registry" / "fer-resnet18" / "versions" / "3")
    for name in ("astronaut.jpg", "grace_hopper.jpg", "group.jpg"):
        rgb = photo(name)
        fast, full = FaceDetector(48).detect(rgb), FaceDetector(48, min_face=8).detect(rgb)
        assert len(fast) == len(full) > 0, name
        for a, b in zip(fast, full, strict=True):
            assert np.abs(np.subtract(a.box, b.box)).max() <= 0.08 * max(b.box[2:]), (name, a.box, b.box)
        labels = lambda faces: predictor.predict_proba(np.stack([f.crop for f in faces])).argmax(1).tolist()  # noqa: E731
        assert labels(fast) == labels(full), name


def test_a_face_below_min_face_is_still_found_when_asked_for():
    # The group photo shrunk until its faces are ~15 px wide: too small for the default (24 px),
    # found when min_face says so.
    img = Image.fromarray(photo("group.jpg"))
    small = np.asarray(img.resize((img.width // 4, img.height // 4), Image.LANCZOS))
    assert len(FaceDetector(48, min_face=12).detect(small)) == 3
