"""Video files: faces tracked across frames, each track's emotion smoothed over time.

Frames go through the same `EmotionService.analyze` as photos. A greedy IoU tracker gives each
face a stable id while it stays in view (a cut or a face leaving ends its track), and an
exponential moving average of each track's probabilities stops labels flickering from frame to
frame. Output: per-frame, per-face rows, a per-track summary, and optionally an annotated video.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class VideoError(ValueError):
    """A file that cannot be read as a video (or has no frames); `status`/`code` as for images."""

    status = 415
    code = "unsupported_video"


class VideoTooLong(VideoError):
    status = 413
    code = "video_too_long"


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw, ih = max(0.0, min(ax1, bx1) - max(a[0], b[0])), max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


@dataclass(eq=False)  # a track is itself, not its field values (numpy arrays cannot be compared so)
class Track:
    id: int
    box: tuple[float, float, float, float]
    smoothed: np.ndarray  # EMA of the class probabilities
    first_frame: int
    last_frame: int
    missed: int = 0
    labels: list[str] = field(default_factory=list)  # smoothed label per frame seen
    prob_sum: np.ndarray | None = None


class Tracker:
    """Greedy IoU matching of each frame's faces to live tracks, with EMA-smoothed probabilities.

    Args:
        labels: class names, in the model's output order.
        alpha: weight of the new frame in the moving average (1 = no smoothing).
        min_iou: overlap a face needs with a track's last box to continue it.
        max_missed: sampled frames a track survives without its face (a blink, a missed detection).
    """

    def __init__(self, labels: list[str], alpha: float = 0.4, min_iou: float = 0.3, max_missed: int = 5):
        self.labels, self.alpha, self.min_iou, self.max_missed = labels, alpha, min_iou, max_missed
        self.live: list[Track] = []
        self.done: list[Track] = []
        self._next = 1

    def update(self, frame: int, boxes: list[tuple[int, int, int, int]], probs: np.ndarray) -> list[Track]:
        """The track of each face (in the order given), creating tracks for new faces."""
        pairs = sorted(
            ((iou(t.box, b), ti, bi) for ti, t in enumerate(self.live) for bi, b in enumerate(boxes)), reverse=True
        )
        owner: dict[int, Track] = {}
        used: set[int] = set()
        for score, ti, bi in pairs:
            if score < self.min_iou:
                break
            if ti in used or bi in owner:
                continue
            used.add(ti)
            owner[bi] = self.live[ti]
        out = []
        for bi, box in enumerate(boxes):
            p = probs[bi]
            t = owner.get(bi)
            if t is None:
                t = Track(self._next, box, p.copy(), frame, frame, prob_sum=np.zeros_like(p))
                self._next += 1
                self.live.append(t)
            else:
                t.smoothed = self.alpha * p + (1 - self.alpha) * t.smoothed
                t.box, t.last_frame, t.missed = box, frame, 0
            t.labels.append(self.labels[int(t.smoothed.argmax())])
            t.prob_sum = t.prob_sum + t.smoothed
            out.append(t)
        for t in [t for t in self.live if t not in out]:
            t.missed += 1
            if t.missed > self.max_missed:
                self.live.remove(t)
                self.done.append(t)
        return out

    def tracks(self) -> list[Track]:
        return sorted(self.done + self.live, key=lambda t: t.id)


def summarize_track(t: Track, labels: list[str], fps: float) -> dict[str, Any]:
    """Id, frames seen, span in seconds, dominant emotion and the time share of each emotion."""
    n = len(t.labels)
    share = {lab: round(t.labels.count(lab) / n, 4) for lab in labels}
    return {
        "id": t.id,
        "frames_seen": n,
        "first_frame": t.first_frame,
        "last_frame": t.last_frame,
        "start_s": round(t.first_frame / fps, 3),
        "end_s": round(t.last_frame / fps, 3),
        "dominant_emotion": max(share, key=share.get),
        "emotion_share": share,
        "mean_probabilities": {lab: round(float(v) / n, 4) for lab, v in zip(labels, t.prob_sum, strict=True)},
    }


@dataclass
class VideoResult:
    fps: float
    frames_in_file: int
    frames_analyzed: int
    duration_s: float
    frames: list[dict[str, Any]]
    tracks: list[dict[str, Any]]


def open_video(path: Path, max_seconds: float | None = None):
    """A cv2.VideoCapture with its fps and frame count; VideoError for what is not a video."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise VideoError("the file is not a video OpenCV can read (use MP4/H.264, AVI, WebM or MOV)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    if fps <= 0 or fps > 1000:
        fps = 25.0  # some containers do not say; a guess only affects the times reported
    if max_seconds is not None and count / fps > max_seconds:
        cap.release()
        raise VideoTooLong(f"the video is {count / fps:.1f} s long; the limit is {max_seconds:g} s")
    return cap, fps, count


def frames(cap, step: int, max_frames: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(index, RGB frame) for every `step`-th frame."""
    import cv2

    i = taken = 0
    while True:
        ok = cap.grab()
        if not ok:
            return
        if i % step == 0:
            ok, bgr = cap.retrieve()
            if not ok:
                return
            yield i, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            taken += 1
            if max_frames is not None and taken >= max_frames:
                return
        i += 1


def process_video(
    service,
    path: Path,
    every: int = 1,
    fps: float | None = None,
    alpha: float = 0.4,
    out_video: Path | None = None,
    max_seconds: float | None = None,
    on_frame: Callable[[int], None] | None = None,
) -> VideoResult:
    """Detect, classify, track and smooth the faces of a video file.

    Args:
        every: analyse every N-th frame; `fps` instead picks N to analyse about that many a second.
        alpha: smoothing weight of each new frame (1 = none).
        out_video: write the analysed frames here, annotated with id and smoothed emotion (.mp4, or
            .webm to play in a browser).
        max_seconds: refuse longer videos (VideoTooLong) before decoding any frame.
        on_frame: called after each analysed frame (progress bars).

    Raises:
        VideoError: not a readable video, or no frame in it.
    """
    import cv2

    cap, src_fps, count = open_video(path, max_seconds)
    step = max(1, round(src_fps / fps)) if fps else max(1, every)
    labels = service.predictor.labels
    tracker = Tracker(labels, alpha=alpha)
    writer, rows, analysed = None, [], 0
    try:
        for index, rgb in frames(cap, step):
            a = service.analyze(rgb, try_rotations=False)
            boxes = [(f.box.x, f.box.y, f.box.w, f.box.h) for f in a.faces]
            probs = np.array([[f.probabilities[lab] for lab in labels] for f in a.faces], np.float32)
            tracks = tracker.update(index, boxes, probs.reshape(len(boxes), len(labels)))
            for f, t in zip(a.faces, tracks, strict=True):
                smooth = {lab: round(float(v), 6) for lab, v in zip(labels, t.smoothed, strict=True)}
                rows.append(
                    {
                        "frame": index,
                        "time_s": round(index / src_fps, 3),
                        "track": t.id,
                        **f.flat(),
                        "smoothed_emotion": t.labels[-1],
                        "smoothed_confidence": round(float(t.smoothed.max()), 6),
                        "probabilities": smooth,
                    }
                )
            if out_video is not None:
                if writer is None:
                    h, w = rgb.shape[:2]
                    # WebM/VP8 plays in every browser (the UI writes it); MPEG-4 Part 2 for .mp4 files:
                    # OpenCV's wheels carry no H.264 encoder.
                    codec = "VP80" if out_video.suffix.lower() == ".webm" else "mp4v"
                    writer = cv2.VideoWriter(str(out_video), cv2.VideoWriter_fourcc(*codec), src_fps / step, (w, h))
                writer.write(cv2.cvtColor(annotate_frame(rgb, a.faces, tracks), cv2.COLOR_RGB2BGR))
            analysed += 1
            if on_frame:
                on_frame(analysed)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if analysed == 0:
        raise VideoError("the video has no frame that could be decoded")
    tracks = [summarize_track(t, labels, src_fps) for t in tracker.tracks()]
    return VideoResult(src_fps, count, analysed, round(count / src_fps, 3), rows, tracks)


def annotate_frame(rgb: np.ndarray, faces, tracks) -> np.ndarray:
    """The frame with each face's box and `#id emotion confidence`, from the smoothed track."""
    from fer.annotate import annotate
    from fer.inference import FaceResult

    shown = [
        FaceResult(
            box=f.box,
            emotion=t.labels[-1],
            confidence=float(t.smoothed.max()),
            probabilities=f.probabilities,
            detection_score=f.detection_score,
        )
        for f, t in zip(faces, tracks, strict=True)
    ]
    return annotate(rgb, shown, numbers=[t.id for t in tracks])
