"""Annotated photos: labels never overlap or leave the image, and a selected face stands out."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fer.annotate import COLORS, TOOLBAR, annotate, layout_labels
from fer.inference import Box, FaceResult


def inside(rect, w, h):
    return rect[0] >= 0 and rect[1] >= 0 and rect[2] <= w + 1e-6 and rect[3] <= h + 1e-6


def overlap(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize(
    ("boxes", "w", "h"),
    [
        # Neighbours at one height, closer than a label is wide (a bus full of faces).
        ([(100, 200, 140, 250), (150, 205, 190, 255), (200, 198, 240, 248), (250, 202, 290, 252)], 640, 480),
        # Faces at the right edge and the top edge of a group photo.
        ([(600, 5, 638, 50), (560, 60, 600, 105), (0, 0, 40, 45)], 640, 480),
        # A crowd: 6 x 4 small faces in a small image.
        ([(20 + 50 * c, 30 + 60 * r, 50 + 50 * c, 70 + 60 * r) for r in range(4) for c in range(6)], 320, 280),
    ],
)
def test_labels_stay_inside_and_apart(boxes, w, h):
    sizes = [(90, 18)] * len(boxes)
    toolbar = (TOOLBAR[0] * w, TOOLBAR[1] * h, TOOLBAR[2] * w, TOOLBAR[3] * h)
    labels = layout_labels(boxes, sizes, w, h, [toolbar])
    assert all(inside(r, w, h) for r in labels)
    assert not any(overlap(a, b) for a, b in itertools.combinations(labels, 2))
    assert not any(overlap(r, toolbar) for r in labels)


def test_a_label_sits_next_to_its_face_when_there_is_room():
    (label,) = layout_labels([(200, 200, 260, 270)], [(90, 18)], 640, 480)
    assert label == (200, 182, 290, 200)  # just above the box, left-aligned with it


def face(x, y, emotion="sad"):
    return FaceResult(
        box=Box(x=x, y=y, w=60, h=70),
        emotion=emotion,
        confidence=0.8,
        probabilities={emotion: 0.8},
        detection_score=0.9,
    )


def test_selected_face_is_highlighted_and_others_dimmed():
    img = np.full((300, 400, 3), 128, np.uint8)
    faces = [face(50, 100), face(250, 100, "neutral")]
    plain, picked = annotate(img, faces), annotate(img, faces, selected=1)
    assert plain.shape == picked.shape == img.shape
    # Unselected boxes turn grey; the selected one keeps its emotion's colour, drawn thicker.
    left_edge = picked[130, 50]
    assert tuple(left_edge) != COLORS["sad"] and tuple(plain[130, 50]) == COLORS["sad"]
    assert tuple(picked[130, 250 + 3]) == COLORS["neutral"] and tuple(plain[130, 250 + 3]) != COLORS["neutral"]


def test_sad_and_neutral_boxes_are_not_grey():
    for emotion in ("sad", "neutral"):
        r, g, b = COLORS[emotion]
        assert max(r, g, b) - min(r, g, b) > 80, f"{emotion} is too grey to see on a photo"
