"""Distillation targets: what a served model (the production ensemble, say) answers on the training faces.

A student trained towards an ensemble's probabilities can learn, in one network, part of what the
ensemble knows: which wrong classes are plausible for a face, not only the one label. The teacher
runs exactly as serving runs it (`Predictor.predict_proba`: its views, members and temperature), so
distilling production means distilling what users get.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fer.config import ConfigError

if TYPE_CHECKING:
    import torch

    from fer.inference import Predictor

log = logging.getLogger(__name__)


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """(N, C) probabilities -> softmax(log p / T): T > 1 flattens them, keeping their order."""
    from fer.policy import softmax

    return probs if temperature == 1 else softmax(np.log(np.clip(probs, 1e-12, None)) / temperature)


def load_teacher(teacher: Path, labels: list[str], size: int) -> Predictor:
    """The teacher's `Predictor`, refused unless it answers in `labels`' order and takes size x size faces.

    Raises:
        ConfigError: the teacher is not an artifact, has other labels, or takes other faces.
    """
    from fer.artifact import ArtifactError
    from fer.inference import Predictor

    try:
        predictor = Predictor(teacher, threads=0)
    except ArtifactError as e:
        raise ConfigError(f"teacher {teacher}: {e}") from e
    if predictor.labels != list(labels):
        raise ConfigError(f"teacher {teacher} answers {predictor.labels}, not {list(labels)}")
    if predictor.input_size != size:
        raise ConfigError(f"teacher {teacher} takes {predictor.input_size} px faces; the student's are {size} px")
    return predictor


def teacher_targets(
    teacher: Path, faces: np.ndarray, base: np.ndarray, labels: list[str], weight: float, temperature: float = 1.0
) -> np.ndarray:
    """(N, C) float32 targets: (1 - weight) x `base` + weight x the teacher's probabilities for `faces`.

    Args:
        teacher: an artifact folder (ONNX Runtime runs it; no torch).
        faces: (N, 48, 48) uint8 training faces, whole (a crop policy cuts its own windows).
        base: (N, C) targets without the teacher (one-hot labels, or FER+ soft labels).
        labels: the class order `base` uses; the teacher must answer in the same order.
        temperature: softens the teacher's probabilities (`soften`) before the mix.

    Raises:
        ConfigError: the teacher has other labels or takes other faces than the training data.
    """
    predictor = load_teacher(teacher, labels, faces.shape[-1])
    start = time.perf_counter()
    probs = soften(predictor.predict_proba(faces), temperature)
    agree = float((probs.argmax(1) == base.argmax(1)).mean()) if len(base) else 0.0
    log.info(
        "teacher %s answered %d training faces in %.0f s; its top class is the target's on %.1f%%",
        teacher,
        len(faces),
        time.perf_counter() - start,
        100 * agree,
    )
    return ((1 - weight) * base + weight * probs).astype(np.float32)


class ConsistentTeacher:
    """The teacher answering each training batch exactly as the student sees it (`data.teacher_consistent`).

    The student's batches are normalised tensors, augmented and mixed; the teacher gets the same
    pixels back in 0-255 and runs its served policy on them, so a flipped, rotated or blended face
    is taught with what the teacher says of *that* image (Beyer et al. 2022).

    Args:
        teacher: an artifact folder taking `size` px faces.
        mean, std: the student's input normalisation (`fer.device.Batcher`'s), undone here.
    """

    def __init__(
        self, teacher: Path, labels: list[str], size: int, weight: float, temperature: float, mean: float, std: float
    ):
        self.predictor = load_teacher(teacher, labels, size)
        self.weight, self.temperature, self.mean, self.std = weight, temperature, mean, std

    def probs(self, x: torch.Tensor) -> np.ndarray:
        """(B, C) teacher probabilities for a (B, 1, s, s) batch in the student's normalisation."""
        pixels = ((x.detach().float() * self.std + self.mean) * 255).squeeze(1).contiguous().cpu().numpy()
        return soften(self.predictor.predict_proba(pixels), self.temperature)

    def mix(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(1 - weight) x `target` ((B, C) distributions) + weight x the teacher's answers on `x`."""
        import torch

        taught = torch.from_numpy(self.probs(x)).to(target.device, target.dtype)
        return (1 - self.weight) * target + self.weight * taught
