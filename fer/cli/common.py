"""What every `fer` command shares: the settings read once per run, errors, common options."""

from __future__ import annotations

from typing import Annotated

import typer

from fer.config import Settings

DataOpt = Annotated[str | None, typer.Option("--data", help="FER-2013 CSV(.gz) or image folder (env FER_DATA)")]
ModelOpt = Annotated[
    str | None, typer.Option("--model", help="registry reference (env FER_MODEL; default fer-resnet18@production)")
]
RegistryOpt = Annotated[str | None, typer.Option("--registry", help="registry directory (env FER_REGISTRY_DIR)")]

_current: dict[str, Settings] = {}


def fail(msg: str, code: int = 2) -> None:
    typer.secho(f"error: {msg}", err=True, fg="red")
    raise typer.Exit(code)


def load_settings() -> Settings:
    """Read the environment into this run's settings (the `fer` callback does it, once)."""
    try:
        _current["settings"] = Settings()
    except ValueError as e:  # pydantic's ValidationError: a bad FER_* variable
        fail(f"invalid settings in the environment: {e}")
    return _current["settings"]


def settings() -> Settings:
    """This run's settings (read by `load_settings`)."""
    return _current.get("settings") or load_settings()


def open_registry_for(path: str | None):
    from fer.registry import open_registry

    return open_registry(path, settings())
