"""What every registry backend shares: the interface, errors, references, the card and the gate.

A backend is one file over this base; the card a version carries and the promotion gate that
decides whether a candidate may take an alias are written here once, so the local and the ClearML
registry can never disagree about them.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fer.artifact import ArtifactMeta

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
GATE_METRIC = "val_acc"


class RegistryError(Exception):
    """Base class of registry errors."""


class ModelNotFound(RegistryError):
    """The name, version or alias does not exist."""


class InvalidReference(RegistryError):
    """A model name, version or alias that is not well formed (e.g. path traversal)."""


class CorruptModel(RegistryError):
    """A version whose files are missing or do not match their recorded checksums."""


class PromotionRefused(RegistryError):
    """The promotion gate refused a candidate worse than the current production model."""


@dataclass
class ModelVersion:
    name: str
    version: int
    path: Path
    card: dict[str, Any]
    aliases: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def metrics(self) -> dict[str, Any]:
        return self.card.get("metrics", {})


class ModelRegistry(Protocol):
    def register(
        self, name: str, artifact_dir: Path, *, source_run: str | None = None, tags: list[str] | None = None
    ) -> ModelVersion: ...
    def list(self, name: str | None = None) -> list[ModelVersion]: ...
    def get(self, name: str, version: int) -> ModelVersion: ...
    def resolve(self, ref: str, verify: bool = True) -> ModelVersion: ...
    def promote(
        self,
        name: str,
        version: int,
        alias: str = "production",
        force: bool = False,
        model_tests: dict[str, Any] | None = None,
        reason: str | None = None,
        evaluation: dict[str, Any] | None = None,
    ) -> ModelVersion: ...
    def rollback(self, name: str, alias: str = "production") -> ModelVersion: ...


def check_name(name: str) -> str:
    if not NAME_RE.match(name or "") or ".." in name:
        raise InvalidReference(f"invalid model name {name!r}: use letters, digits, '.', '_' and '-' (max 64)")
    return name


def check_alias(alias: str) -> str:
    if not ALIAS_RE.match(alias or ""):
        raise InvalidReference(f"invalid alias {alias!r}")
    return alias


def parse_ref(ref: str, default_alias: str = "production") -> tuple[str, int | str]:
    """Split `name@production` / `name@3` / `name` into (name, version-or-alias), validated."""
    name, _, target = ref.partition("@")
    check_name(name)
    target = target or default_alias
    if target.isdigit():
        return name, int(target)
    if not ALIAS_RE.match(target):
        raise InvalidReference(f"invalid alias {target!r} in {ref!r}")
    return name, target


def build_card(
    name: str,
    meta: ArtifactMeta,
    *,
    source_run: str | None,
    tags: list[str] | None,
    files: dict[str, str],
    **extra: Any,
) -> dict[str, Any]:
    """A version's card: what `fer registry show` prints and the gate reads."""
    return {
        "name": name,
        "metrics": meta.metrics,
        "arch": meta.arch,
        "labels": meta.labels,
        "data_sha256": meta.data.get("sha256"),
        "code_version": meta.code_version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source_run": source_run,
        "tags": tags or [],
        "files": files,
        **extra,
    }


def gate(
    name: str,
    version: int,
    candidate_metric: float | None,
    alias: str,
    current_version: int | None,
    current_metric: float | None,
) -> None:
    """The promotion gate: refuse a candidate whose validation accuracy is below the holder's.

    Raises:
        PromotionRefused: saying by how much, and how to override.
    """
    if current_version is None or current_metric is None:
        return
    if candidate_metric is None or candidate_metric < current_metric:
        shown = "None" if candidate_metric is None else f"{candidate_metric:.4f}"
        raise PromotionRefused(
            f"refusing to promote {name}@{version} to {alias!r}: its {GATE_METRIC} {shown} is below "
            f"{name}@{current_version}'s {current_metric:.4f} (use --force to promote anyway)"
        )


def gate_measured(
    name: str, version: int, alias: str, current_version: int | None, evaluation: dict[str, Any]
) -> dict[str, Any] | None:
    """The gate on numbers measured side by side (`fer pipeline`'s evaluate step), not stored ones.

    `evaluation` is {"candidate": {metric: value}, "baseline": {"ref": ..., metric: value}}: the
    candidate and the holder measured on one machine and the same data (FER-2013 validation, and
    the feedback hold-out where there is one). It decides on val_acc, and reports every metric.
    Returns the report, or None when it does not apply (no holder measured, or not the holder).

    Raises:
        PromotionRefused: the candidate's measured val_acc is below the holder's; all metrics shown.
    """
    base = evaluation.get("baseline")
    if current_version is None or not base or base.get("ref") != f"{name}@{current_version}":
        return None
    cand = evaluation["candidate"]
    shown = ", ".join(
        f"{k} {cand[k]:.4f} vs {base[k]:.4f}" for k in sorted(cand) if isinstance(base.get(k), int | float)
    )
    report = {"measured": True, "candidate": cand, "baseline": base, "summary": shown}
    if cand[GATE_METRIC] < base[GATE_METRIC]:
        raise PromotionRefused(
            f"refusing to promote {name}@{version} to {alias!r}: measured against {name}@{current_version} "
            f"on the same data, {shown} ({GATE_METRIC} decides; use --force to promote anyway)"
        )
    return report


def gate_model_tests(name: str, version: int, alias: str, report: dict[str, Any] | None) -> None:
    """The gate's second half: a candidate whose behavioural model tests failed is refused.

    Raises:
        PromotionRefused: naming every failed check.
    """
    if report is not None and not report.get("passed", False):
        failed = ", ".join(report.get("failed", [])) or "unknown"
        raise PromotionRefused(
            f"refusing to promote {name}@{version} to {alias!r}: its model tests failed "
            f"({failed}; fer test-model shows the report; use --force to promote anyway)"
        )


def as_metric(value: Any) -> float | None:
    """A gate metric as stored (a number, or a string in ClearML metadata), or None."""
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
