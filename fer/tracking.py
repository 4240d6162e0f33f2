"""Experiment trackers behind one interface; the local file tracker is the default.

Training and tuning talk only to `Tracker`. Backends for hosted services import their SDKs
lazily, so a missing SDK only matters when that backend is selected.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Tracker(Protocol):
    def start(self, project: str, name: str, tags: list[str], config: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_confusion_matrix(self, matrix: list[list[int]], labels: list[str], step: int) -> None: ...
    def log_artifact(self, path: Path, name: str, meta: dict[str, Any]) -> None: ...
    def finish(self, status: str) -> None: ...


class NullTracker:
    """Logs nothing; for tests and library use."""

    def start(self, project, name, tags, config): pass
    def log_metrics(self, metrics, step): pass
    def log_confusion_matrix(self, matrix, labels, step): pass
    def log_artifact(self, path, name, meta): pass
    def finish(self, status): pass


class LocalTracker:
    """Appends events as JSON lines to `<run_dir>/events.jsonl` (the default tracker)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "events.jsonl"

    def _write(self, kind: str, **payload: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps({"time": time.time(), "event": kind, **payload}) + "\n")

    def start(self, project, name, tags, config):
        self._write("start", project=project, name=name, tags=tags, config=config)

    def log_metrics(self, metrics, step):
        self._write("metrics", step=step, metrics=metrics)

    def log_confusion_matrix(self, matrix, labels, step):
        self._write("confusion_matrix", step=step, matrix=matrix, labels=labels)

    def log_artifact(self, path, name, meta):
        self._write("artifact", path=str(path), name=name, meta=meta)

    def finish(self, status):
        self._write("finish", status=status)


class MultiTracker:
    """Fans every call out to several trackers."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def __getattr__(self, method: str):
        def fan_out(*args, **kwargs):
            for t in self.trackers:
                getattr(t, method)(*args, **kwargs)
        return fan_out
