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

from fer.artifact import ArtifactMeta
from fer.clearml_session import ClearMLConnection, ClearMLUnavailable, update_weights

log = logging.getLogger(__name__)


class Tracker(Protocol):
    def start(self, project: str, name: str, tags: list[str], config: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_confusion_matrix(self, matrix: list[list[int]], labels: list[str], step: int) -> None: ...
    def log_artifact(self, path: Path, name: str, meta: ArtifactMeta) -> None: ...
    def finish(self, status: str) -> None: ...


class NullTracker:
    """Logs nothing; for tests and library use."""

    def start(self, project, name, tags, config):
        pass

    def log_metrics(self, metrics, step):
        pass

    def log_confusion_matrix(self, matrix, labels, step):
        pass

    def log_artifact(self, path, name, meta):
        pass

    def finish(self, status):
        pass


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
        self._write("artifact", path=str(path), name=name, meta=meta.to_json())

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


class TrackerUnavailable(RuntimeError):
    """A selected tracker cannot start (SDK missing, server unreachable, credentials missing)."""


def _split_key(key: str) -> tuple[str, str]:
    # "val_acc" -> ("acc", "val"): one chart per quantity with train/val/test as its series.
    prefix, _, rest = key.partition("_")
    if rest and prefix in {"train", "val", "test"}:
        return rest, prefix
    return key, key


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= _flat(v, f"{key}/")
        else:
            out[key] = v if isinstance(v, int | float | str | bool) else str(v)
    return out


class ClearMLTracker:
    """Logs a run to ClearML: offline session (default) or a server when one is configured.

    Offline sessions land in `$CLEARML_CACHE_DIR/offline/` as a folder and a zip that any server
    imports later (`clearml-task --import-offline-session <zip>`).
    """

    def __init__(
        self,
        project: str = "fer",
        offline: bool | None = None,
        cache_dir: Path | str | None = None,
        connection: ClearMLConnection | None = None,
    ):
        self.project = project
        self.connection = connection or ClearMLConnection()
        self.offline = (not self.connection.online) if offline is None else offline
        self.cache_dir = cache_dir
        self.task = None
        self.session_zip: Path | None = None

    @classmethod
    def from_settings(cls, settings) -> ClearMLTracker:
        """Online when `settings` name a ClearML server, else an offline session."""
        return cls(settings.clearml_project, connection=ClearMLConnection.from_settings(settings))

    def start(self, project, name, tags, config):
        try:
            from clearml import Task
        except ImportError as e:
            raise TrackerUnavailable("the clearml tracker needs `pip install clearml`") from e
        self.connection.prepare_sdk(self.cache_dir)
        if self.offline:
            Task.set_offline(True)
        else:
            try:
                self.connection.check_server()
            except ClearMLUnavailable as e:
                raise TrackerUnavailable(str(e)) from None
        self.task = Task.init(
            project_name=self.project or project,
            task_name=name,
            tags=list(tags),
            reuse_last_task_id=False,
            # A dict, not False: plain False still lets the SDK ping its update server.
            auto_connect_frameworks={"detect_repository": False},
            auto_connect_arg_parser=False,
            auto_resource_monitoring=False,
        )
        self.task.connect(_flat(config), name="config")

    def log_metrics(self, metrics, step):
        logger = self.task.get_logger()
        for key, value in metrics.items():
            title, series = _split_key(key)
            logger.report_scalar(title=title, series=series, value=float(value), iteration=step)

    def log_confusion_matrix(self, matrix, labels, step):
        self.task.get_logger().report_confusion_matrix(
            title="confusion_matrix",
            series="val",
            matrix=matrix,
            iteration=step,
            xaxis="predicted",
            yaxis="true",
            xlabels=list(labels),
            ylabels=list(labels),
        )

    def log_artifact(self, path, name, meta):
        from clearml import OutputModel

        path = Path(path)
        weights = path / "model.onnx" if (path / "model.onnx").is_file() else path / "weights.pt"
        om = OutputModel(
            task=self.task,
            name=name,
            tags=[meta.arch],
            framework="ONNX" if weights.suffix == ".onnx" else "PyTorch",
            label_enumeration={lab: i for i, lab in enumerate(meta.labels)},
        )
        update_weights(om, weights, self.offline)
        self.task.upload_artifact("meta", artifact_object=meta.to_json())
        # set_parameter adds to the connected config; set_parameters would replace all of it.
        self.task.set_parameter("data/sha256", meta.data.get("sha256", ""))
        self.task.set_parameter("code/version", meta.code_version or "")

    def finish(self, status):
        if self.task is None:
            return
        if status == "failed":
            self.task.mark_failed(status_reason="training failed", force=True)
        self.task.close()
        if self.offline:
            folder = self.task.get_offline_mode_folder()
            self.session_zip = Path(f"{folder}.zip") if folder else None
            log.info(
                "ClearML offline session: %s (import with clearml-task --import-offline-session)", self.session_zip
            )


class NeptuneTracker:
    """Logs a run with the `neptune` client: offline by default, async when a token and project are set.

    neptune.ai's hosted service shut down on 2026-03-05; async mode is for teams running their own
    Neptune deployment. Offline runs are written under `.neptune/` in the working directory.
    """

    def __init__(self, project: str | None = None, mode: str | None = None, api_token: str | None = None):
        self.project = project or "fer/fer"
        self.api_token = api_token
        online = bool(api_token and project)
        self.mode = mode or ("async" if online else "offline")
        self.run = None

    @classmethod
    def from_settings(cls, settings) -> NeptuneTracker:
        """Async when `settings` hold a token and a project (NEPTUNE_*), else offline."""
        return cls(settings.neptune_project, settings.neptune_mode, settings.neptune_api_token)

    def start(self, project, name, tags, config):
        try:
            import neptune
        except ImportError as e:
            raise TrackerUnavailable("the neptune tracker needs `pip install neptune`") from e
        self.run = neptune.init_run(
            project=self.project,
            api_token=self.api_token,
            name=name,
            tags=list(tags),
            mode=self.mode,
            capture_stdout=False,
            capture_stderr=False,
            capture_hardware_metrics=False,
            capture_traceback=False,
            source_files=[],
            git_ref=False,
        )
        self.run["parameters"] = _flat(config)

    def log_metrics(self, metrics, step):
        for key, value in metrics.items():
            self.run[f"metrics/{key}"].append(float(value), step=step)

    def log_confusion_matrix(self, matrix, labels, step):
        self.run["metrics/confusion_matrix"].append(json.dumps({"labels": list(labels), "matrix": matrix}), step=step)

    def log_artifact(self, path, name, meta):
        self.run["model/name"] = name
        self.run["model/path"] = str(path)
        self.run["model/metrics"] = _flat(meta.metrics)
        self.run["data/sha256"] = meta.data.get("sha256", "")
        self.run["code/version"] = meta.code_version or ""

    def finish(self, status):
        if self.run is None:
            return
        self.run["status"] = status
        self.run.stop()


TRACKERS = {"local": LocalTracker, "clearml": ClearMLTracker, "neptune": NeptuneTracker, "none": NullTracker}


def make_tracker(names: str | list[str], run_dir: Path, settings=None) -> MultiTracker:
    """Trackers by name (`local,clearml,neptune`); unknown names are errors.

    `settings` (a `fer.config.Settings`) says where ClearML and Neptune connect; without it they
    log offline.
    """
    names = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    unknown = sorted(set(names) - set(TRACKERS))
    if unknown:
        from fer.config import ConfigError

        raise ConfigError(f"unknown tracker(s) {', '.join(unknown)}; choose from {', '.join(TRACKERS)}")

    def build(name: str) -> Tracker:
        if name == "local":
            return LocalTracker(run_dir)
        if name in ("clearml", "neptune") and settings is not None:
            return TRACKERS[name].from_settings(settings)
        return TRACKERS[name]()

    return MultiTracker([build(n) for n in names])


def enqueue_remote(queue: str, project: str, name: str, config: dict[str, Any], connection: ClearMLConnection) -> None:
    """Hand this training run to a ClearML agent listening on `queue` (e.g. a GPU worker).

    Locally this creates the task and exits the process; on the agent, the same command runs
    again, `execute_remotely` returns at once, and training proceeds there.
    """
    if not connection.online:
        raise TrackerUnavailable(
            "--queue needs a ClearML server: set CLEARML_API_HOST, CLEARML_API_ACCESS_KEY "
            "and CLEARML_API_SECRET_KEY (see README, 'Training on ClearML agents')"
        )
    try:
        connection.check_server()
    except ClearMLUnavailable as e:
        raise TrackerUnavailable(str(e)) from None
    from clearml import Task

    task = Task.init(
        project_name=project,
        task_name=name,
        reuse_last_task_id=False,
        auto_connect_frameworks={"detect_repository": False},
        auto_resource_monitoring=False,
    )
    task.connect(_flat(config), name="config")
    task.execute_remotely(queue_name=queue, clone=False, exit_process=True)
