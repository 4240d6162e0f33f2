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

import numpy as np

from fer.config import ConfigError

log = logging.getLogger(__name__)


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """(N, C) probabilities -> softmax(log p / T): T > 1 flattens them, keeping their order."""
    from fer.policy import softmax

    return probs if temperature == 1 else softmax(np.log(np.clip(probs, 1e-12, None)) / temperature)


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
    from fer.artifact import ArtifactError
    from fer.inference import Predictor

    try:
        predictor = Predictor(teacher, threads=0)
    except ArtifactError as e:
        raise ConfigError(f"teacher {teacher}: {e}") from e
    if predictor.labels != list(labels):
        raise ConfigError(f"teacher {teacher} answers {predictor.labels}, not {list(labels)}")
    if faces.shape[1:] != (predictor.input_size, predictor.input_size):
        raise ConfigError(f"teacher {teacher} takes {predictor.input_size} px faces; the data has {faces.shape[1:]}")
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
