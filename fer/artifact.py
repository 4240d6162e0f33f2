"""The model artifact's file names and its typed, versioned `meta.json` schema; no torch.

An artifact is a folder: `model.onnx` (what serves), `meta.json` (what the model is: architecture,
labels in output order, input size, normalisation, config, metrics, data checksum, code version)
and, for a training run's artifact, `weights.pt`. Every reader and writer goes through
`read_meta` / `write_meta`, so serving, the registry, evaluation and export agree on one shape.

Schema versions: 1 is the unversioned meta of the first shipped models (no `schema_version` key);
2 adds `schema_version`; 3 adds the test-time `policy` (crops, flips, temperature, fused members),
which changes what the model answers, so a fer that predates it must refuse the artifact rather
than serve it without; 4 adds the policy's `zooms`, for the same reason; 5 adds its
`early_exit`. All read; `write_meta` writes the oldest schema that holds what the policy uses
(5 with an early exit, 4 with zooms, else 3, leaving the unused keys out), so every other
artifact stays readable by an older fer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fer.files import atomic_write

META_FILE = "meta.json"
WEIGHTS_FILE = "weights.pt"
ONNX_FILE = "model.onnx"
CARD_FILE = "card.json"  # the registry's record of a version (not part of the artifact itself)
REQUIRED_FILES = (META_FILE, ONNX_FILE)  # what serving needs
SCHEMA_VERSION = 5


class ArtifactError(ValueError):
    """A folder that is not a usable artifact: missing files, invalid or too-new meta.json."""


class Normalize(BaseModel):
    """Pixel preprocessing: `(uint8 * scale - mean) / std`."""

    model_config = ConfigDict(extra="forbid")

    mean: float
    std: float = Field(gt=0)
    scale: float = 1 / 255


class EarlyExit(BaseModel):
    """Answer from the policy's first `views` views alone when they are sure enough.

    Those views run first, calibrated by their own `temperature`; a face whose top probability
    reaches `threshold` is answered there, and only the others get the remaining views (and the
    policy's temperature, fitted on all of them). Sure faces rarely change their answer when more
    views are averaged in, so most of the cost of the extra views is saved for little accuracy
    (docs/model-quality.md, fifteenth set). `fer calibrate --exit-views N --exit-threshold P` fits
    both temperatures on PublicTest.
    """

    model_config = ConfigDict(extra="forbid")

    views: int = Field(ge=1)
    threshold: float = Field(gt=0, le=1)
    temperature: float = Field(1.0, gt=0)


class Policy(BaseModel):
    """How the model is run at test time; `fer.policy` executes it for serving and evaluation alike.

    Each face crop becomes views (crop windows, and their mirror images with `flip`); the network
    sees every view, each view's logits are divided by `temperature` before the softmax, and the
    views' probabilities are averaged. The defaults are one plain pass over the whole crop.
    """

    model_config = ConfigDict(extra="forbid")

    crop: int = Field(0, ge=0)  # network input side; 0 = the whole face crop (input_size)
    crops: Literal["center", "five"] = "center"  # five: the centre and the four corner windows
    # Zoomed views of each window: the window rescaled by each factor about its centre
    # (bilinear; > 1 zooms in, < 1 out, the border repeated), each beside the window itself.
    # A network trained with scale augmentation answers a face slightly nearer or farther too,
    # and averaging those answers helps as the mirror does (docs/model-quality.md, seventh set).
    zooms: list[float] = []
    flip: bool = False  # also average the horizontally mirrored views
    temperature: float = Field(1.0, gt=0)  # fitted on PublicTest (`fer calibrate`); 1 = uncalibrated
    # References of the networks fused into model.onnx (`fer ensemble`), which averages their
    # probabilities inside the graph; informational, the graph already does the averaging.
    members: list[str] = []
    early_exit: EarlyExit | None = None  # answer sure faces from the first views alone

    @field_validator("zooms")
    @classmethod
    def _zooms(cls, zooms: list[float]) -> list[float]:
        if any(not 0.5 <= z <= 2.0 or z == 1.0 for z in zooms):
            raise ValueError("each zoom must be in [0.5, 2] and not 1 (the window itself is always a view)")
        return zooms

    @model_validator(mode="after")
    def _exit_before_the_last_view(self) -> Policy:
        if self.early_exit and self.early_exit.views >= self.views:
            raise ValueError(
                f"early_exit.views ({self.early_exit.views}) must be fewer than the policy's {self.views} views"
            )
        return self

    @property
    def views(self) -> int:
        return (5 if self.crops == "five" and self.crop else 1) * (1 + len(self.zooms)) * (2 if self.flip else 1)


class ArtifactMeta(BaseModel):
    """The contents of `meta.json`. Unknown keys are kept (a newer minor writer may add some)."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    schema_version: int = 1  # absent in the first shipped artifacts, which are version 1
    name: str = "model"
    arch: str
    labels: list[str] = Field(min_length=2)
    input_size: int = Field(48, ge=8)
    channels: int = 1
    normalize: Normalize
    dropout: float = 0.0
    metrics: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    config: dict[str, Any] = {}
    data: dict[str, Any] = {}
    code_version: str | None = None
    created: str | None = None
    device: str | None = None
    bf16: bool | None = None
    torch: str | None = None
    version: str | None = None  # how an artifact outside a registry reports itself
    metrics_measured: dict[str, Any] | None = None  # earlier metrics, kept when re-measured
    quantization: dict[str, Any] | None = None
    fine_tuned_from: dict[str, Any] | None = None  # the artifact `fit` started from (cfg.init)
    policy: Policy = Policy()

    @property
    def numeric_metrics(self) -> dict[str, float]:
        return {k: v for k, v in self.metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}

    def to_json(self) -> dict[str, Any]:
        raw = self.model_dump(mode="json", exclude_none=True)
        if self.policy.early_exit:
            return raw | {"schema_version": 5}
        if not self.policy.zooms:  # nothing a schema-3 reader would miss: write what it reads
            del raw["policy"]["zooms"]
            return raw | {"schema_version": 3}
        return raw | {"schema_version": 4}


def read_meta(artifact_dir: Path | str) -> ArtifactMeta:
    """Read and validate an artifact's meta.json.

    Raises:
        ArtifactError: the file is missing, not JSON, invalid, or from a newer schema.
    """
    path = Path(artifact_dir) / META_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"not a model artifact: {path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"corrupt model artifact: {path} is not valid JSON ({e})") from None
    return parse_meta(raw, str(path))


def parse_meta(raw: Any, where: str = "meta.json") -> ArtifactMeta:
    """Validate a meta mapping (from a file, or a registry's stored copy)."""
    if not isinstance(raw, dict):
        raise ArtifactError(f"{where}: expected a JSON object")
    if int(raw.get("schema_version", 1)) > SCHEMA_VERSION:
        raise ArtifactError(
            f"{where}: schema_version {raw['schema_version']} is newer than this fer "
            f"understands ({SCHEMA_VERSION}); upgrade fer"
        )
    try:
        return ArtifactMeta.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise ArtifactError(f"{where}: invalid artifact metadata: {problems}") from None


def write_meta(artifact_dir: Path | str, meta: ArtifactMeta) -> Path:
    """Write meta.json atomically (a reader never sees half a file)."""
    path = Path(artifact_dir) / META_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(meta.to_json(), indent=2))
    return path


def check_files(artifact_dir: Path | str) -> None:
    """Raise ArtifactError naming the first file serving needs that the folder lacks."""
    for name in REQUIRED_FILES:
        if not (Path(artifact_dir) / name).is_file():
            raise ArtifactError(f"{artifact_dir}: {name} is missing")
