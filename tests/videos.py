"""Small test videos made from the photos that ship with the project, so the expected tracks are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import EXAMPLES
from PIL import Image

W, H, SIDE, FPS = 640, 480, 240, 10


# Where each photo's face is (x, y, w, h, as the detector finds it): crops centred on it put two
# different people's faces on the same spot of a frame.
FACE_BOXES = {"astronaut.jpg": (178, 62, 91, 115), "grace_hopper.jpg": (183, 120, 170, 213)}


def face(name: str, centred: bool = False) -> np.ndarray:
    im = Image.open(EXAMPLES / name).convert("RGB")
    if centred:
        x, y, w, h = FACE_BOXES[name]
        half = max(w, h)
        cx, cy = x + w // 2, y + h // 2
        im = im.crop((cx - half, cy - half, cx + half, cy + half))
    return np.asarray(im.resize((SIDE, SIDE)))


def write(path: Path, frames: list[np.ndarray], fps: int = FPS) -> Path:
    import cv2

    codec = "VP80" if path.suffix == ".webm" else "mp4v"  # WebM plays in the browser, MPEG-4 Part 2 does not
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (W, H))
    for rgb in frames:
        out.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out.release()
    return path


def frame_with(*placed: tuple[np.ndarray, int, int]) -> np.ndarray:
    canvas = np.full((H, W, 3), 90, np.uint8)
    for img, x, y in placed:
        canvas[y : y + SIDE, x : x + SIDE] = img
    return canvas


def pan(path: Path, n: int = 30) -> Path:
    """One face sliding left to right across the frame: one track."""
    a = face("astronaut.jpg")
    return write(path, [frame_with((a, round(i * (W - SIDE) / (n - 1)), 120)) for i in range(n)])


def cut(path: Path, n: int = 30) -> Path:
    """A cut half-way, to another person elsewhere in the frame: two tracks, the second from the cut."""
    a, g = face("astronaut.jpg"), face("grace_hopper.jpg")
    return write(path, [frame_with((a, 40, 120)) if i < n // 2 else frame_with((g, 360, 120)) for i in range(n)])


def flicker(path: Path, n: int = 30) -> Path:
    """One smiling face with another face flashed in its place every 5th frame: one track whose
    raw label flickers (a glitch, as a bad frame or a wink gives) and whose smoothed label need not."""
    a, g = face("astronaut.jpg", centred=True), face("grace_hopper.jpg", centred=True)
    return write(path, [frame_with((g if i % 5 == 4 else a, 200, 120)) for i in range(n)])
