"""Drawing results on a photo: a box per face and a label laid out so labels never overlap or
leave the image, with one face optionally highlighted. Used by the UI (and anything that writes
annotated images).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Saturated, distinct colours, each readable with white text (WCAG contrast >= 3 against white
# for the label text, and visible on grey photos: no grey boxes for sad or neutral).
COLORS = {
    "angry": (220, 38, 38),
    "disgust": (21, 128, 61),
    "fear": (126, 34, 206),
    "happy": (29, 78, 216),
    "sad": (3, 105, 161),
    "surprise": (194, 65, 12),
    "neutral": (15, 118, 110),
}
OUTLINE = (255, 255, 255)
DIMMED = (120, 120, 120)
# Corners where Gradio's image toolbar sits over the picture (fractions of width and height).
TOOLBAR = (0.82, 0.0, 1.0, 0.09)

Rect = tuple[float, float, float, float]  # x0, y0, x1, y1


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def layout_labels(
    boxes: Sequence[Rect], sizes: Sequence[tuple[float, float]], width: int, height: int, reserved: Sequence[Rect] = ()
) -> list[Rect]:
    """A rectangle for each label: next to its box, inside the image, overlapping no other label.

    Tries above the box, below it, then inside its top edge; each candidate is slid left to fit
    the image's right edge, then moved down (or up) in small steps past any label already placed
    or `reserved` area. Labels are placed in the given order (largest face first).
    """
    placed: list[Rect] = []
    for (x0, y0, _, y1), (w, h) in zip(boxes, sizes, strict=True):
        w, h = min(w, width), min(h, height)
        left = min(max(0.0, x0), width - w)
        candidates = [(left, y0 - h), (left, y1), (left, y0)]
        taken = [*placed, *reserved]
        # Exactly above, below or inside first; only then slide, so a label covers its face last.
        best = next(
            (
                r
                for slide in (1, 8)
                for cx, cy in candidates
                if (r := _fit(cx, cy, w, h, width, height, taken, tries=slide)) is not None
            ),
            None,
        )
        if best is None:  # a crowded photo: the first free row anywhere in the image
            best = _fit(left, 0, w, h, width, height, taken, tries=None) or (left, 0, left + w, h)
        placed.append(best)
    return placed


def _fit(
    x: float, y: float, w: float, h: float, width: int, height: int, taken: list[Rect], tries: int | None
) -> Rect | None:
    """The first free spot from (x, y), moving down then up in quarter-label steps (None: anywhere)."""
    y = min(max(0.0, y), height - h)
    step = max(1.0, h / 4)
    tries = int(height / step) + 1 if tries is None else tries
    for direction in (1, -1):
        for k in range(tries):
            ty = y + direction * k * step
            if ty < 0 or ty + h > height:
                break
            rect = (x, ty, x + w, ty + h)
            if not any(_overlaps(rect, t) for t in taken):
                return rect
    return None


def annotate(rgb: np.ndarray, faces, selected: int | None = None, numbers: Sequence[int] | None = None) -> np.ndarray:
    """Draw every face's box and `n: emotion confidence` label; `selected` (0-based) stands out.

    Args:
        rgb: (H, W, 3) uint8 image.
        faces: objects with `box` (x, y, w, h), `emotion` and `confidence` (`FaceResult`).
        selected: the face to highlight (thick box, others dimmed), or None.
        numbers: what to call each face in its label (a video's track ids, shown as `#id`);
            1, 2, ... by default.
    """
    from PIL import Image, ImageDraw, ImageFont

    im = Image.fromarray(rgb).convert("RGB")
    draw = ImageDraw.Draw(im)
    W, H = im.size
    side = max(W, H)
    stroke = max(2, side // 250)
    font = ImageFont.load_default(size=max(12, side // 45))
    pad = max(2, font.size // 5)
    names = [f"#{n}" for n in numbers] if numbers is not None else [str(i) for i in range(1, len(faces) + 1)]
    texts = [f"{n}: {f.emotion} {f.confidence:.0%}" for n, f in zip(names, faces, strict=True)]
    sizes = []
    for t in texts:
        left, top, right, bottom = draw.textbbox((0, 0), t, font=font)
        sizes.append((right - left + 2 * pad, bottom - top + 2 * pad))
    boxes = [(f.box.x, f.box.y, f.box.x + f.box.w, f.box.y + f.box.h) for f in faces]
    reserved = [(TOOLBAR[0] * W, TOOLBAR[1] * H, TOOLBAR[2] * W, TOOLBAR[3] * H)]
    labels = layout_labels(boxes, sizes, W, H, reserved)
    order = [i for i in range(len(faces)) if i != selected] + ([selected] if selected is not None else [])
    for i in order:  # the selected face last, on top
        f, (x0, y0, x1, y1), rect = faces[i], boxes[i], labels[i]
        color = COLORS.get(f.emotion, (220, 38, 38))
        if selected is not None and i != selected:
            color = DIMMED
        width = stroke * 2 if i == selected else stroke
        # A white halo under the coloured line keeps boxes visible on dark and busy backgrounds.
        draw.rectangle([x0 - 1, y0 - 1, x1 + 1, y1 + 1], outline=OUTLINE, width=width + 2)
        draw.rectangle([x0, y0, x1, y1], outline=color, width=width)
        draw.rectangle(rect, fill=color, outline=OUTLINE, width=1)
        tl, tt, _, _ = draw.textbbox((0, 0), texts[i], font=font)
        draw.text((rect[0] + pad - tl, rect[1] + pad - tt), texts[i], fill=(255, 255, 255), font=font)
    return np.asarray(im)
