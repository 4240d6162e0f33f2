"""The `fer` command: thin commands over the package's modules (argument handling only)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from fer.cli import artifacts, infer
from fer.cli.common import DataOpt, ModelOpt, RegistryOpt, fail, load_settings, open_registry_for
from fer.cli.common import settings as run_settings
from fer.cli.registry import registry_app
from fer.config import ConfigError, Settings, setup_logging

log = logging.getLogger("fer")

app = typer.Typer(
    help="Facial emotion recognition: train, evaluate, register and serve models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Markdown, not Rich's console markup: "[env X]"-style text would vanish as a markup tag, and
    # docstrings reflow as paragraphs instead of breaking where the source lines break.
    rich_markup_mode="markdown",
    add_completion=False,
)
app.add_typer(registry_app, name="registry")
app.command("predict")(infer.predict)
app.command("video")(infer.video)
app.command("test-model")(infer.test_model)
app.command("pipeline")(infer.pipeline)
app.command("export")(artifacts.export)
app.command("quantize")(artifacts.quantize)
app.command("calibrate")(artifacts.calibrate)
app.command("ensemble")(artifacts.ensemble)
feedback_app = typer.Typer(help="User feedback collected by the server (FER_FEEDBACK_DIR).", no_args_is_help=True)
feedback_app.command("export")(infer.feedback_export)
app.add_typer(feedback_app, name="feedback")


@app.callback()
def _main(log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING")] = "INFO") -> None:
    setup_logging(log_level)
    load_settings()


@app.command()
def train(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="experiments/*.yaml")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override, e.g. --set epochs=5")] = None,
    data: DataOpt = None,
    run_dir: Annotated[Path | None, typer.Option(help="output folder (default runs/<name>-<time>)")] = None,
    resume: Annotated[Path | None, typer.Option(help="run folder or last.pt to continue")] = None,
    init: Annotated[
        str | None,
        typer.Option(help="fine-tune this model (name@version, name@production or an artifact folder)"),
    ] = None,
    teacher: Annotated[
        str | None,
        typer.Option(help="distil this model's answers (name@version, name@production or an artifact folder)"),
    ] = None,
    register: Annotated[bool, typer.Option(help="register the result in the model registry")] = False,
    registry: RegistryOpt = None,
    tracker: Annotated[str, typer.Option(help="comma-separated: local, clearml, neptune, none")] = "local",
    queue: Annotated[str | None, typer.Option(help="run on a ClearML agent listening on this queue")] = None,
) -> None:
    """Train a model; writes a run folder with checkpoints and the model artifact."""
    from fer.artifact import ArtifactError
    from fer.clearml_session import ClearMLConnection
    from fer.config import load_train_config
    from fer.data import DataError
    from fer.onnx_import import artifact_path, resolve_init
    from fer.registry import RegistryError
    from fer.tracking import TrackerUnavailable, enqueue_remote, make_tracker
    from fer.train import default_run_dir, fit

    settings = run_settings()
    try:
        cfg = load_train_config(config, set_ or [])
        if init:
            cfg = cfg.model_copy(update={"init": str(resolve_init(init, open_registry_for(registry)).resolve())})
        if teacher:
            path = artifact_path(teacher, open_registry_for(registry)).resolve()
            cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"teacher": str(path)})})
        if queue:
            # Exits here locally; on the agent it returns and the run is tracked in ClearML.
            enqueue_remote(
                queue, "fer", cfg.name, cfg.model_dump(mode="json"), ClearMLConnection.from_settings(settings)
            )
            tracker = tracker if "clearml" in tracker else f"{tracker},clearml"
        out = Path(run_dir) if run_dir else (Path(resume) if resume and Path(resume).is_dir() else None)
        out = out or default_run_dir(cfg)
        result = fit(
            cfg,
            data_path=data or settings.data,
            run_dir=out,
            resume=resume,
            tracker=make_tracker(tracker, out, settings),
        )
    except (ArtifactError, ConfigError, DataError, FileNotFoundError, RegistryError, TrackerUnavailable) as e:
        fail(str(e))
    typer.echo(json.dumps(result.metrics, indent=2))
    typer.echo(f"artifact: {result.artifact_dir}")
    if register:
        mv = open_registry_for(registry).register(cfg.name, result.artifact_dir, source_run=str(result.run_dir))
        typer.echo(f"registered {mv.ref}")


@app.command()
def evaluate(
    model: Annotated[str | None, typer.Option(help="registry reference, e.g. fer-resnet18@production")] = None,
    artifact: Annotated[Path | None, typer.Option(help="artifact folder instead of a registry reference")] = None,
    data: DataOpt = None,
    split: Annotated[str, typer.Option(help="train, val (PublicTest) or test (PrivateTest)")] = "test",
    tta: Annotated[
        bool, typer.Option(help="also average with the mirrored image (on top of the artifact's own policy)")
    ] = False,
    ferplus: Annotated[Path | None, typer.Option(help="fer2013new.csv for FER+ majority-vote accuracy")] = None,
    unseen: Annotated[
        bool, typer.Option(help="leave out the images that appear pixel-for-pixel in Training (288 of PrivateTest)")
    ] = False,
    out: Annotated[Path | None, typer.Option(help="write metrics.json and plots here")] = None,
    registry: RegistryOpt = None,
) -> None:
    """Evaluate a model on a split: accuracy, macro-F1, per-class, confusion matrix, calibration."""
    from fer.artifact import ArtifactError
    from fer.data import DataError, load_dataset
    from fer.evaluate import evaluate_split, save_report
    from fer.inference import Predictor
    from fer.registry import RegistryError

    settings = run_settings()
    try:
        if artifact is None:
            mv = open_registry_for(registry).resolve(model or settings.model)
            artifact, name = mv.path, mv.ref
        else:
            name = str(artifact)
        predictor = Predictor(artifact, threads=0)
        ds = load_dataset(data or settings.data, cache_dir=settings.cache)
        policy = predictor.policy.model_copy(update={"flip": True}) if tta else None
        data_split = ds[split]
        if unseen:
            from fer.explore import in_split

            data_split = data_split.subset(~in_split(ds, "train", split))
        m = evaluate_split(predictor, data_split, policy=policy, ferplus=ferplus)
    except (RegistryError, DataError, ArtifactError, FileNotFoundError) as e:
        fail(str(e))
    if out:
        paths = save_report(m, predictor.labels, out, f"{name} on {split}")
        typer.echo(f"report: {', '.join(str(p) for p in paths.values())}")
    pol = m["policy"]
    views = f"{pol['crops']} {pol['crop']} px crops" if pol["crop"] else "whole crop"
    views += f", zoomed x{' x'.join(f'{z:g}' for z in pol['zooms'])}" if pol.get("zooms") else ""
    where = f"{split} without Training duplicates" if unseen else split
    typer.echo(
        f"{name} on {where} ({m['n']} images; {views}{', + mirror' if pol['flip'] else ''}, "
        f"temperature {pol['temperature']:.3g}):"
    )
    typer.echo(f"  accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  ECE {m['ece']:.4f}")
    if "ferplus" in m:
        typer.echo(f"  FER+ majority accuracy {m['ferplus']['accuracy']:.4f} on {m['ferplus']['n']} images")
    for lab, pc in m["per_class"].items():
        typer.echo(
            f"  {lab:9s} precision {pc['precision']:.3f}  recall {pc['recall']:.3f}  f1 {pc['f1']:.3f}"
            f"  n={pc['support']}"
        )


@app.command()
def tune(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="experiments/tune.yaml")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override, e.g. --set subset=0.1")] = None,
    trials: Annotated[int | None, typer.Option(help="total trials in the study")] = None,
    timeout: Annotated[float | None, typer.Option(help="seconds for the study (per worker)")] = None,
    epochs: Annotated[int | None, typer.Option(help="epochs per trial")] = None,
    subset: Annotated[float | None, typer.Option(help="stratified fraction of Training per trial")] = None,
    workers: Annotated[int, typer.Option(help="worker processes sharing a journal-file study")] = 1,
    storage: Annotated[str | None, typer.Option(help="Optuna storage URL (e.g. postgresql://...)")] = None,
    data: DataOpt = None,
    tracker: Annotated[str, typer.Option(help="trackers for every trial: local, clearml, neptune, none")] = "none",
    train_best: Annotated[bool, typer.Option(help="train the best config on full Training and register it")] = False,
    registry: RegistryOpt = None,
) -> None:
    """Tune learning rate, batch size and optimizer with Optuna (resumable, prunable)."""
    from fer.data import DataError
    from fer.tracking import TrackerUnavailable, make_tracker
    from fer.tune import load_tune_config, run_study

    extra = [
        f"{k}={v}"
        for k, v in (
            ("trials", trials),
            ("timeout", timeout),
            ("epochs", epochs),
            ("subset", subset),
            ("storage", storage),
        )
        if v is not None
    ]
    try:
        cfg = load_tune_config(config, [*(set_ or []), *extra])
        result = run_study(cfg, data_path=data or run_settings().data, workers=workers, trackers=tracker)
    except (ConfigError, DataError, TrackerUnavailable) as e:
        fail(str(e))
    typer.echo(
        f"study {result.study_name}: {result.n_complete} complete, {result.n_pruned} pruned, "
        f"{result.seconds / 60:.1f} min this session"
    )
    typer.echo(f"best val_acc {result.best_value:.4f} with {result.best_params}")
    typer.echo(f"best config: {result.best_config}  (fer train --config {result.best_config})")
    if train_best:
        from fer.config import load_train_config
        from fer.train import default_run_dir, fit

        best = load_train_config(result.best_config)
        out = default_run_dir(best)
        fit_result = fit(
            best,
            data_path=data or run_settings().data,
            run_dir=out,
            tracker=make_tracker(tracker or "local", out, run_settings()),
        )
        mv = open_registry_for(registry).register(
            best.name, fit_result.artifact_dir, source_run=str(out), tags=[f"study:{result.study_name}"]
        )
        typer.echo(f"trained and registered {mv.ref} (not promoted; fer registry promote {mv.ref})")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (env FER_HOST; default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (env FER_PORT; default 8000)")] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes (env FER_WORKERS; default 1)")] = None,
    model: ModelOpt = None,
    registry: RegistryOpt = None,
) -> None:
    """Serve the REST API and the web UI (the production model from the registry)."""
    from fer.serving.server import serve as run_server

    given = {"host": host, "port": port, "workers": workers, "model": model, "registry_dir": registry}
    current = run_settings()
    try:  # validated like the environment would be: a bad --port is refused here
        settings = Settings.model_validate(current.model_dump() | {k: v for k, v in given.items() if v is not None})
    except ValueError as e:
        fail(str(e))
    run_server(settings)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)
