"""The training pipeline as a ClearML pipeline (`fer pipeline --clearml`): the same steps, as components.

`fer.pipeline.run_pipeline` is the one definition of the steps and their order; this module only
changes how each step runs. Every step is a `PipelineDecorator.component` whose outputs are
uploaded as an artifact of the pipeline task and whose cache is the pipeline's own content-hash
cache, so a re-run here also re-executes only what changed.

Without a ClearML server the pipeline runs in debug mode in this process, offline: the pipeline
task, its configuration and every step's artifact are stored in the offline session (import it
into a server later with `clearml-task`'s `import_offline_session`). With a server and a queue,
the pipeline logic runs here and each step is enqueued for ClearML agents on that queue.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run_clearml_pipeline(cfg, base_dir: Path, settings, queue: str | None = None) -> dict[str, Any]:
    """Run `fer.pipeline` as a ClearML pipeline; the summary, plus the pipeline task's id (and
    `offline_session`, the session zip, when there is no server).

    Raises:
        ConfigError: a queue was given but no ClearML server is configured.
    """
    from clearml import PipelineDecorator, Task

    from fer.clearml_session import ClearMLConnection
    from fer.config import REPO_ROOT, ConfigError
    from fer.pipeline import run_pipeline

    offline = not settings.clearml_online
    if queue and offline:
        raise ConfigError("--queue needs a ClearML server (CLEARML_API_HOST and credentials); none is configured")

    @PipelineDecorator.component(name="fer-step", return_values=["outputs"], cache=False, execution_queue=queue)
    def fer_step(root: str, name: str, inputs: dict) -> dict:
        # Self-contained (imports inside): on an agent this function runs alone from its source.
        from pathlib import Path

        from clearml import Task

        from fer.pipeline import run_cached

        outputs = run_cached(Path(root), name, inputs)
        task = Task.current_task()
        if task is not None:
            task.upload_artifact(f"{name}_outputs", outputs, wait_on_upload=True)
        return outputs

    def run_step(root: Path, name: str, inputs: dict) -> dict:
        return fer_step(str(root), name, inputs)

    result: dict[str, Any] = {}

    @PipelineDecorator.pipeline(name=f"{cfg.name}-pipeline", project=settings.clearml_project, version="1.0")
    def pipeline() -> None:
        task = Task.current_task()
        task.connect_configuration(cfg.model_dump(mode="json"), name="pipeline")
        result.update(run_pipeline(cfg, base_dir, settings, run_step=run_step))
        task.upload_artifact("summary", result, wait_on_upload=True)
        result["clearml_task"] = task.id
        if offline:  # the decorator closes the task after this function, which writes the zip
            result["offline_session"] = f"{task.get_offline_mode_folder()}.zip"

    ClearMLConnection.from_settings(settings).prepare_sdk()
    # The requirements file instead of the SDK's import analysis of the running script, which
    # under pytest or on a busy machine takes minutes (its 300 s timeout, then it gives up).
    Task.force_requirements_env_freeze(force=True, requirements_file=str(REPO_ROOT / "requirements.txt"))
    if offline:
        Task.set_offline(True)
        # Steps run as functions in this process: no agent, no server, and (unlike run_locally,
        # which starts each step as a task of its own) it works in offline mode.
        PipelineDecorator.debug_pipeline()
    elif queue is None:
        PipelineDecorator.run_locally()
    pipeline()
    return result
