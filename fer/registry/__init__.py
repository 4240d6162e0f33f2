"""The model registry: one interface (`base`), a local file backend (default), a ClearML backend.

`open_registry(settings)` is the factory every caller uses; the backends are chosen by
`FER_REGISTRY` (`local`, `clearml`, or `auto`: ClearML when its credentials are set).
"""

from __future__ import annotations

from pathlib import Path

from fer.registry.base import (
    GATE_METRIC,
    CorruptModel,
    InvalidReference,
    ModelNotFound,
    ModelRegistry,
    ModelVersion,
    PromotionRefused,
    RegistryError,
    check_name,
    parse_ref,
)
from fer.registry.local import LocalRegistry

__all__ = [
    "GATE_METRIC",
    "CorruptModel",
    "InvalidReference",
    "LocalRegistry",
    "ModelNotFound",
    "ModelRegistry",
    "ModelVersion",
    "PromotionRefused",
    "RegistryError",
    "check_name",
    "open_registry",
    "parse_ref",
]


def open_registry(
    root: Path | str | None = None, settings=None, *, base: Path | str | None = "shipped", backend: str | None = None
) -> ModelRegistry:
    """The configured registry.

    Args:
        root: the writable local registry folder, overriding `settings.registry_dir`.
        settings: a `fer.config.Settings` (backend, registry folder, ClearML project, cache); the
            defaults when None (the environment is read only by entry points).
        base: the read-only registry beneath it; "shipped" is the one in the repository.
        backend: `local`, `clearml` or `auto`, overriding `settings.registry`.
    """
    from fer.config import SHIPPED_REGISTRY, Settings

    settings = settings or Settings.model_construct()
    backend = (backend or settings.registry).lower()
    if backend == "auto":
        backend = "clearml" if settings.clearml_online else "local"
    if backend == "clearml":
        from fer.clearml_session import ClearMLConnection
        from fer.registry.clearml_backend import ClearMLRegistry

        return ClearMLRegistry(
            project=settings.clearml_project,
            cache_dir=Path(settings.cache) / "clearml",
            connection=ClearMLConnection.from_settings(settings),
        )
    if backend != "local":
        raise RegistryError(f"unknown registry backend {backend!r}: use local, clearml or auto")
    if base == "shipped":
        base = SHIPPED_REGISTRY if SHIPPED_REGISTRY.is_dir() else None
    return LocalRegistry(root or settings.registry_dir, base)
