"""Typed configuration: training runs (`TrainConfig`, from YAML plus overrides) and runtime settings."""

from __future__ import annotations

import json
import logging
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
# The registry shipped with the repository: read-only, holds the production model.
SHIPPED_REGISTRY = REPO_ROOT / "models" / "registry"


class ConfigError(ValueError):
    """A run configuration that cannot be used, with a message naming the problem."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(StrictModel):
    path: str | None = None  # CSV(.gz) file or image folder; falls back to --data / FER_DATA
    val_fraction: float = Field(0.1, gt=0, lt=0.5)  # only for layouts without PublicTest
    subset: float = Field(1.0, gt=0, le=1.0)  # stratified fraction of Training (tuning budgets)
    seed: int = 0
    # FER+ soft labels: train on the vote distribution of fer2013new.csv's ten annotators (joined
    # by CSV row), mixed with the FER-2013 label as (1 - ferplus_weight) x label + ferplus_weight x votes.
    ferplus: str | None = None
    ferplus_weight: float = Field(1.0, ge=0, le=1)
    # Distillation: an artifact folder whose answers on the Training images (as served: its own
    # views, members and temperature) become the targets, mixed as (1 - teacher_weight) x the
    # target above + teacher_weight x the teacher's probabilities. `fer train --teacher REF` resolves one.
    teacher: str | None = None
    teacher_weight: float = Field(0.5, ge=0, le=1)
    # Softens the teacher's probabilities before the mix, as softmax(log p / T) (Hinton et al.'s
    # distillation temperature; 1 = as served). A teacher that has seen the Training faces answers
    # them more surely than faces it has not, so its wrong-but-plausible classes carry little weight.
    teacher_temperature: float = Field(1.0, gt=0, le=20)
    # Consistent teaching (Beyer et al. 2022, "a good teacher is patient and consistent"): the
    # teacher answers every training batch as the student sees it, augmented and mixed, instead of
    # once on the clean faces, so the target always describes the image being learnt. Costs a
    # teacher pass per step; the teacher must take the student's input size (no crop training).
    teacher_consistent: bool = False


class AugmentConfig(StrictModel):
    enabled: bool = True
    rotation: float = Field(15.0, ge=0, le=180)  # degrees, uniform in [-r, r]
    hflip: float = Field(0.5, ge=0, le=1)
    brightness: float = Field(0.25, ge=0, le=1)  # additive shift, fraction of full range
    contrast: float = Field(0.25, ge=0, le=1)  # multiplicative factor in [1-c, 1+c]
    scale: float = Field(0.1, ge=0, le=0.5)  # zoom factor in [1-s, 1+s]
    translate: float = Field(0.1, ge=0, le=0.5)  # shift, fraction of the image side
    erasing: float = Field(0.25, ge=0, le=1)  # probability of one random-erasing box
    # Train on random crop x crop windows of the face (0 = the whole image); evaluation then uses
    # the centre crop, and serving the artifact's test-time policy (ten-crop style averaging).
    crop: int = Field(0, ge=0, le=48)
    # mixup (Zhang et al. 2018): each batch is blended with a shuffled copy of itself, images and
    # targets alike, by a weight drawn from Beta(mixup, mixup); 0 disables it.
    mixup: float = Field(0.0, ge=0)


class ModelConfig(StrictModel):
    arch: str = "resnet18"
    pretrained: bool = False
    dropout: float = Field(0.0, ge=0, lt=1)


class OptimConfig(StrictModel):
    name: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # SGD only
    scheduler: Literal["onecycle", "cosine", "step", "plateau", "none"] = "onecycle"
    warmup_fraction: float = Field(0.15, ge=0, lt=1)  # OneCycle ramp-up share


class TrainConfig(StrictModel):
    """Everything a training run needs; saved resolved next to the run's artifact."""

    name: str = "fer-resnet18"
    seed: int = 42
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(512, ge=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    early_stopping: int = Field(0, ge=0)  # patience in epochs; 0 disables
    keep_checkpoints: bool = False  # keep last.pt/best.pt after a finished run (they go by default)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    channels_last: bool = True
    threads: int = Field(0, ge=0)  # torch intra-op threads; 0 = torch default
    # Fine-tune: an artifact folder whose ONNX network to start from (fer.onnx_import), with its
    # normalisation and crop; BatchNorm stays frozen. `fer train --init name@version` resolves one.
    init: str | None = None
    output_dir: str = "runs"
    data: DataConfig = DataConfig()
    augment: AugmentConfig = AugmentConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()

    @property
    def view_crop(self) -> int:
        """The side the network sees when random crops train it (0: the whole 48 px face)."""
        return self.augment.crop if 0 < self.augment.crop < 48 else 0

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v not in {"auto", "cpu", "cuda", "mps"} and not v.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, not {v!r}")
        return v


def _parse_value(raw: str) -> Any:
    # YAML scalar rules give ints, floats, bools and null the way a user expects on a command line.
    return yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key.sub=value` overrides to a nested dict (unknown keys are caught by validation)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = _parse_value(raw)
    return data


def load_train_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML run config, apply overrides and validate it.

    Raises:
        ConfigError: the file is missing or not a mapping, or a key is unknown or invalid.
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level")
        data = loaded
    data = apply_overrides(data, overrides or [])
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(_describe(err, TrainConfig) for err in e.errors())
        raise ConfigError(f"invalid config{f' {path}' if path else ''}: {problems}") from e


def config_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key a config accepts (`epochs`, `data.subset`, ...)."""
    out = []
    for name, field in model.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            out += config_keys(sub, f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


def _describe(err: dict, model: type[BaseModel]) -> str:
    """One validation error as `key: message`, suggesting the right key for an unknown one."""
    import difflib

    key = ".".join(str(x) for x in err["loc"])
    if err.get("type") != "extra_forbidden":
        return f"{key}: {err['msg']}"
    keys = config_keys(model)
    last = key.rsplit(".", 1)[-1]
    # Same last part in another section first (subset -> data.subset), then near spellings.
    hints = [k for k in keys if k.rsplit(".", 1)[-1] == last] or difflib.get_close_matches(key, keys, n=3)
    hint = f"; did you mean {' or '.join(hints)}?" if hints else ""
    return f"{key}: {err['msg']}{hint}"


def save_config(cfg: BaseModel, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


class Settings(BaseSettings):
    """Every runtime setting, from `FER_*` environment variables or passed in explicitly.

    Entry points (`app.py`, `fer` commands) build one and hand it down; library modules never read
    the environment themselves. Services' own variables (ClearML, Neptune, Prometheus) are read
    here too, under their usual names.
    """

    model_config = SettingsConfigDict(env_prefix="FER_", extra="ignore", populate_by_name=True)

    # --- data, caches, registry ---
    data: str | None = None  # FER-2013 CSV(.gz) or image folder
    cache: str = str(Path.home() / ".cache" / "fer")  # decoded-data cache and downloaded models
    registry: str = "local"  # local, clearml, or auto: ClearML when its credentials are set
    registry_dir: str = ".fer/registry"  # writable local registry; the shipped one is layered beneath
    clearml_project: str = "fer"
    model: str = "fer-resnet18@production"
    # --- serving ---
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1)
    # Seconds a worker may take to answer uvicorn's supervisor ping (and to start): uvicorn's 5 s
    # default killed workers still importing Gradio and loading the model on a busy machine.
    worker_healthcheck_timeout: int = Field(120, ge=1)
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1)
    max_pixels: int = Field(40_000_000, ge=1)
    batch_max_files: int = Field(32, ge=1)  # files in one POST /predict/batch
    batch_max_bytes: int = Field(50 * 1024 * 1024, ge=1)  # all files of one POST /predict/batch
    video_max_bytes: int = Field(50 * 1024 * 1024, ge=1)  # one POST /predict/video upload
    video_max_seconds: float = Field(60.0, gt=0)  # longer videos get 413 video_too_long
    # Shadow rollout: a candidate (name@version) sees a share of live faces after each answer.
    shadow_model: str | None = None
    shadow_share: float = Field(1.0, ge=0, le=1)
    # The shadow only uses spare cores: with this many other photos in progress it skips the
    # image (counted in fer_shadow_skipped_total). 0 = all cores but one (at least 1).
    shadow_max_inflight: int = Field(0, ge=0)
    # Feedback (POST /feedback): off unless a folder is set; only face crops and labels are kept.
    feedback_dir: str | None = None
    feedback_window_s: float = Field(600.0, gt=0)  # how long an answer can still get feedback
    feedback_window_max: int = Field(1000, ge=1)  # answers kept in memory for it
    feedback_max_records: int = Field(10_000, ge=1)
    feedback_retention_days: float = Field(30.0, gt=0)
    detector_threshold: float = Field(0.7, gt=0, lt=1)
    # The narrowest face looked for, in pixels; smaller finds smaller faces, with slower detection.
    min_face_px: int | None = Field(None, ge=4)  # None: fer.faces.DEFAULT_MIN_FACE (24)
    max_faces: int = Field(64, ge=1)
    model_threads: int = Field(1, ge=0)
    batch_max_wait_ms: float = Field(0.0, ge=0, le=100)  # micro-batching across requests; 0 = off
    batch_max_size: int = Field(32, ge=1)  # faces per batched model call
    ui: bool = True
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"  # one JSON object per line, for Fluentd
    admin_token: str | None = None  # enables POST /admin/reload; no default, never committed
    reload_interval: float = Field(0.0, ge=0)  # seconds between registry polls; 0 = off
    body_timeout: float = Field(30.0, gt=0)  # seconds the next chunk of a request body may take
    cors_origins: list[str] = []  # browser origins allowed to call the API; none by default
    rate_limit_per_minute: int = Field(0, ge=0)  # POST /predict per client address; 0 = off
    rate_limit_burst: int = Field(20, ge=1)  # requests a client may send at once before limiting
    # --- other services' own variables ---
    metrics_multiproc_dir: str | None = Field(None, validation_alias="PROMETHEUS_MULTIPROC_DIR")
    clearml_api_host: str | None = Field(None, validation_alias="CLEARML_API_HOST")
    clearml_api_access_key: str | None = Field(None, validation_alias="CLEARML_API_ACCESS_KEY")
    clearml_api_secret_key: str | None = Field(None, validation_alias="CLEARML_API_SECRET_KEY")
    clearml_config_file: str | None = Field(None, validation_alias="CLEARML_CONFIG_FILE")
    clearml_cache_dir: str | None = Field(None, validation_alias="CLEARML_CACHE_DIR")
    neptune_project: str | None = Field(None, validation_alias="NEPTUNE_PROJECT")
    neptune_api_token: str | None = Field(None, validation_alias="NEPTUNE_API_TOKEN")
    neptune_mode: str | None = Field(None, validation_alias="NEPTUNE_MODE")

    @field_validator("admin_token", mode="before")
    @classmethod
    def _strong_token(cls, v: str | None) -> str | None:
        # Empty means unset: docker-compose.yml passes FER_ADMIN_TOKEN=${FER_ADMIN_TOKEN:-}, and
        # an empty value in .env is how a user leaves the admin endpoints off.
        if v is not None and not str(v).strip():
            return None
        if v is not None and (len(v) < 16 or v.lower() in {"changeme", "admin", "password", "secret"}):
            raise ValueError("FER_ADMIN_TOKEN must be at least 16 characters and not a default word")
        return v

    @property
    def clearml_online(self) -> bool:
        """A ClearML server is configured (API host and credentials)."""
        return bool(self.clearml_api_host and self.clearml_api_access_key and self.clearml_api_secret_key)

    def to_env(self) -> dict[str, str]:
        """The `FER_*` variables that rebuild these settings in another process (uvicorn workers)."""
        out = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if value is None or field.validation_alias:
                continue
            out[f"FER_{name.upper()}"] = json.dumps(value) if isinstance(value, list) else str(value)
        return out


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read from the environment once; for entry points only."""
    return Settings()


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line, so Fluentd (or any collector) parses logs without regexes.

    Structured fields come from `extra={"fields": {...}}`; they are merged into the object.
    """

    converter = time.gmtime  # timestamps in UTC, so the "Z" they end with is true

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextLogFormatter(logging.Formatter):
    """Human-readable lines for terminals; structured fields appended as JSON."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        return f"{line} {json.dumps(fields, default=str)}" if fields else line


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Configure root logging; called only by entry points. `fmt` is "text" or "json"."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter() if fmt == "json" else TextLogFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
