"""`Predictor`: an artifact's ONNX model with its own preprocessing; face crops in, probabilities out.

Needs only numpy and onnxruntime (no torch), so the serving image stays small.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from fer.artifact import ONNX_FILE, ArtifactMeta, Policy, read_meta
from fer.policy import probabilities, view_logits

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    emotion: str
    confidence: float
    probabilities: dict[str, float]


class Predictor:
    """Runs an artifact folder's `model.onnx` with the normalisation and test-time policy of its `meta.json`.

    Args:
        artifact_dir: folder holding `model.onnx` and `meta.json`.
        threads: ONNX Runtime intra-op threads (1 suits per-request serving; 0 = all cores).
        name, version: how the model is reported (defaults from meta).
    """

    def __init__(
        self, artifact_dir: Path | str, threads: int = 1, name: str | None = None, version: str | int | None = None
    ):
        import onnxruntime as ort

        self.artifact_dir = Path(artifact_dir)
        self.meta: ArtifactMeta = read_meta(self.artifact_dir)
        self.labels: list[str] = list(self.meta.labels)
        self.input_size: int = self.meta.input_size
        self.policy: Policy = self.meta.policy
        norm = self.meta.normalize
        self._scale = norm.scale / norm.std
        self._shift = norm.mean / norm.std
        self.name = name or self.meta.name
        self.version = str(version if version is not None else (self.meta.version or "local"))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(self.artifact_dir / ONNX_FILE), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._input = self.session.get_inputs()[0].name

    def preprocess(self, faces: np.ndarray) -> np.ndarray:
        """(N, s, s) grayscale views of any side the network takes -> (N, 1, s, s) float32.

        Views are uint8, or float32 where a zoom interpolated them (`fer.policy.views`).
        """
        return (faces.astype(np.float32) * self._scale - self._shift)[:, None]

    def logits(self, faces: np.ndarray) -> np.ndarray:
        """The network's raw output for already-made views (no policy)."""
        return self.session.run(None, {self._input: self.preprocess(faces)})[0]

    def _check(self, faces: np.ndarray) -> np.ndarray:
        if faces.ndim == 2:
            faces = faces[None]
        if faces.shape[1:] != (self.input_size, self.input_size):
            raise ValueError(f"expected {self.input_size}x{self.input_size} crops, got {faces.shape[1:]}")
        return faces

    def view_logits(self, faces: np.ndarray, policy: Policy | None = None, batch_size: int = 256) -> np.ndarray:
        """(V, N, C) logits of every view the policy (default: the artifact's) makes of each crop."""
        faces, policy = self._check(faces), policy or self.policy
        out = [view_logits(self.logits, faces[i : i + batch_size], policy) for i in range(0, len(faces), batch_size)]
        return np.concatenate(out, axis=1) if out else np.zeros((policy.views, 0, len(self.labels)), np.float32)

    def predict_proba(self, faces: np.ndarray, batch_size: int = 256, policy: Policy | None = None) -> np.ndarray:
        """Class probabilities (N, C) for uint8 face crops, as the artifact's test-time policy says.

        `policy` overrides it (evaluation of alternatives); serving always uses the artifact's.
        """
        faces, policy = self._check(faces), policy or self.policy
        out = [probabilities(self.logits, faces[i : i + batch_size], policy) for i in range(0, len(faces), batch_size)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, len(self.labels)), np.float32)

    def predict(self, faces: np.ndarray) -> list[Prediction]:
        return self.predictions(self.predict_proba(faces))

    def predictions(self, probs: np.ndarray) -> list[Prediction]:
        return [
            Prediction(
                self.labels[int(p.argmax())],
                float(p.max()),
                {lab: float(v) for lab, v in zip(self.labels, p, strict=True)},
            )
            for p in probs
        ]


class Box(BaseModel):
    """A face's box in pixels of the (EXIF-rotated) image."""

    x: int
    y: int
    w: int
    h: int


class FaceResult(BaseModel):
    """One face, from detection to the JSON answer: the API and the UI use this one shape."""

    box: Box
    emotion: str
    confidence: float = Field(description="probability of `emotion`")
    probabilities: dict[str, float]
    detection_score: float = Field(description="the face detector's confidence (1.0 for a whole-image crop)")

    def flat(self) -> dict[str, int | str | float]:
        """Box, emotion and confidence as flat columns (CSV and JSONL rows)."""
        b = self.box
        return {
            "x": b.x,
            "y": b.y,
            "w": b.w,
            "h": b.h,
            "emotion": self.emotion,
            "confidence": round(self.confidence, 6),
        }


ROTATIONS = (90, 270, 180)  # clockwise turns tried when a photo shows no face as it is


def rotate(rgb: np.ndarray, degrees: int) -> np.ndarray:
    """The image turned `degrees` clockwise (a multiple of 90)."""
    return np.ascontiguousarray(np.rot90(rgb, -(degrees // 90) % 4))


@dataclass
class Analysis:
    faces: list[FaceResult]
    is_crop: bool  # no face detected; the small image was classified as a face crop itself
    width: int
    height: int
    detect_s: float
    infer_s: float
    rotation: int = 0  # degrees clockwise the photo was turned to find faces; boxes are in that image
    crops: np.ndarray | None = None  # (faces, H, W) uint8: what the model saw (for feedback)

    def scaled(self, photo) -> Analysis:
        """This analysis of a reduced decode (`fer.images.Photo`) in full-size pixels."""
        sx, sy = photo.scale
        w, h = photo.width, photo.height
        if self.rotation in (90, 270):  # boxes are in the turned image: its axes are swapped
            sx, sy, w, h = sy, sx, h, w
        if (sx, sy) == (1.0, 1.0):
            return self
        faces = [
            f.model_copy(
                update={
                    "box": Box(
                        x=round(f.box.x * sx), y=round(f.box.y * sy), w=round(f.box.w * sx), h=round(f.box.h * sy)
                    )
                }
            )
            for f in self.faces
        ]
        return dataclasses.replace(self, faces=faces, width=w, height=h)

    @property
    def primary(self) -> FaceResult | None:
        return self.faces[0] if self.faces else None


class EmotionService:
    """Photo in, every face's emotion out: face detection + one batched model call.

    The one object behind both the REST API and the UI.
    """

    def __init__(self, predictor: Predictor, detector, batcher=None):
        self.predictor = predictor
        self.detector = detector
        self.batcher = batcher  # a MicroBatcher over predictor.predict_proba, or None

    @classmethod
    def from_artifact(
        cls,
        artifact_dir: Path | str,
        name: str | None = None,
        version: str | int | None = None,
        threads: int = 1,
        score_threshold: float = 0.7,
        max_faces: int = 64,
        batch_max_wait: float = 0.0,
        batch_max_size: int = 32,
        min_face: int | None = None,
    ) -> EmotionService:
        """`batch_max_wait` > 0 turns on micro-batching across concurrent requests (fer.batching)."""
        from fer.faces import DEFAULT_MIN_FACE, FaceDetector

        predictor = Predictor(artifact_dir, threads=threads, name=name, version=version)
        batcher = None
        if batch_max_wait > 0:
            from fer.batching import MicroBatcher

            batcher = MicroBatcher(predictor.predict_proba, batch_max_size, batch_max_wait)
        detector = FaceDetector(predictor.input_size, score_threshold, max_faces, min_face or DEFAULT_MIN_FACE)
        return cls(predictor, detector, batcher)

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()

    def analyze(self, rgb: np.ndarray, try_rotations: bool = True, pixel_scale: float = 1.0) -> Analysis:
        """Every face's emotion. A photo with no face found as it is is tried turned 90, 270 and 180
        degrees clockwise (sideways phone photos without an EXIF orientation tag); `rotation` says
        which turn was used. Video frames skip that (`try_rotations=False`): a frame without a
        face is common there, and a video does not turn between frames. `pixel_scale`: photo
        pixels per pixel of `rgb` (`Photo.pixel_scale` for a reduced decode)."""
        import time

        t0 = time.perf_counter()
        faces, is_crop = self.detector.faces_or_crop(rgb, pixel_scale)
        rotation = 0
        if not faces and try_rotations:
            # YuNet finds some turned faces but not all; the turn whose faces score best is the
            # upright one (a face upside down can still be found, with a lower score).
            tries = [(rotate(rgb, d), d) for d in ROTATIONS]
            found = [(self.detector.detect(img, pixel_scale), img, d) for img, d in tries]
            best = max(found, key=lambda f: sum(x.score for x in f[0]))
            if best[0]:
                faces, rgb, rotation = best
        t1 = time.perf_counter()
        results = []
        if faces:
            crops = np.stack([f.crop for f in faces])
            probs = self.batcher(crops) if self.batcher else self.predictor.predict_proba(crops)
            preds = self.predictor.predictions(probs)
            results = [
                FaceResult(
                    box=Box(x=f.box[0], y=f.box[1], w=f.box[2], h=f.box[3]),
                    emotion=p.emotion,
                    confidence=p.confidence,
                    probabilities=p.probabilities,
                    detection_score=f.score,
                )
                for f, p in zip(faces, preds, strict=True)
            ]
        t2 = time.perf_counter()
        crops = np.stack([f.crop for f in faces]) if faces else None
        return Analysis(results, is_crop, rgb.shape[1], rgb.shape[0], t1 - t0, t2 - t1, rotation, crops)
