"""The `fer` command line: thin commands over the package's modules."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from fer.config import ConfigError, get_settings, setup_logging

log = logging.getLogger("fer")

app = typer.Typer(help="Facial emotion recognition: train, evaluate, register and serve models.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
registry_app = typer.Typer(help="The model registry: list, register, promote, rollback, show.",
                           no_args_is_help=True)
app.add_typer(registry_app, name="registry")

DataOpt = Annotated[str | None, typer.Option("--data", help="FER-2013 CSV(.gz) or image folder [env FER_DATA]")]
RegistryOpt = Annotated[str | None, typer.Option("--registry", help="registry directory [env FER_REGISTRY_DIR]")]


def _fail(msg: str, code: int = 2) -> None:
    typer.secho(f"error: {msg}", err=True, fg="red")
    raise typer.Exit(code)


def _registry(path: str | None):
    from fer.registry import open_registry

    return open_registry(path or get_settings().registry_dir)


@app.callback()
def _main(log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING")] = "INFO") -> None:
    setup_logging(log_level)


@app.command()
def train(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="experiments/*.yaml")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override, e.g. --set epochs=5")] = None,
    data: DataOpt = None,
    run_dir: Annotated[Path | None, typer.Option(help="output folder (default runs/<name>-<time>)")] = None,
    resume: Annotated[Path | None, typer.Option(help="run folder or last.pt to continue")] = None,
    register: Annotated[bool, typer.Option(help="register the result in the model registry")] = False,
    registry: RegistryOpt = None,
    tracker: Annotated[str, typer.Option(help="comma-separated: local, clearml, neptune, none")] = "local",
    queue: Annotated[str | None, typer.Option(help="run on a ClearML agent listening on this queue")] = None,
) -> None:
    """Train a model; writes a run folder with checkpoints and the model artifact."""
    from fer.config import load_train_config
    from fer.data import DataError
    from fer.tracking import TrackerUnavailable, enqueue_remote, make_tracker
    from fer.train import default_run_dir, fit

    try:
        cfg = load_train_config(config, set_ or [])
        if queue:
            # Exits here locally; on the agent it returns and the run is tracked in ClearML.
            enqueue_remote(queue, "fer", cfg.name, cfg.model_dump(mode="json"))
            tracker = tracker if "clearml" in tracker else f"{tracker},clearml"
        out = Path(run_dir) if run_dir else (Path(resume) if resume and Path(resume).is_dir() else None)
        out = out or default_run_dir(cfg)
        result = fit(cfg, data_path=data, run_dir=out, resume=resume, tracker=make_tracker(tracker, out))
    except (ConfigError, DataError, FileNotFoundError, TrackerUnavailable) as e:
        _fail(str(e))
    typer.echo(json.dumps(result.metrics, indent=2))
    typer.echo(f"artifact: {result.artifact_dir}")
    if register:
        mv = _registry(registry).register(cfg.name, result.artifact_dir, source_run=str(result.run_dir))
        typer.echo(f"registered {mv.ref}")


@app.command()
def evaluate(
    model: Annotated[str | None, typer.Option(help="registry reference, e.g. fer-resnet18@production")] = None,
    artifact: Annotated[Path | None, typer.Option(help="artifact folder instead of a registry reference")] = None,
    data: DataOpt = None,
    split: Annotated[str, typer.Option(help="train, val (PublicTest) or test (PrivateTest)")] = "test",
    tta: Annotated[bool, typer.Option(help="average with the horizontally flipped image")] = False,
    ferplus: Annotated[Path | None, typer.Option(help="fer2013new.csv for FER+ majority-vote accuracy")] = None,
    out: Annotated[Path | None, typer.Option(help="write metrics.json and plots here")] = None,
    registry: RegistryOpt = None,
) -> None:
    """Evaluate a model on a split: accuracy, macro-F1, per-class, confusion matrix, calibration."""
    from fer.data import DataError, load_dataset
    from fer.evaluate import evaluate_split, save_report
    from fer.inference import Predictor
    from fer.registry import RegistryError

    try:
        if artifact is None:
            mv = _registry(registry).resolve(model or get_settings().model)
            artifact, name = mv.path, mv.ref
        else:
            name = str(artifact)
        predictor = Predictor(artifact, threads=0)
        ds = load_dataset(data or get_settings().data)
        m = evaluate_split(predictor, ds[split], tta_flip=tta, ferplus=ferplus)
    except (RegistryError, DataError, FileNotFoundError) as e:
        _fail(str(e))
    if out:
        paths = save_report(m, predictor.labels, out, f"{name} on {split}")
        typer.echo(f"report: {', '.join(str(p) for p in paths.values())}")
    typer.echo(f"{name} on {split} ({m['n']} images{', flip TTA' if tta else ''}):")
    typer.echo(f"  accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  ECE {m['ece']:.4f}")
    if "ferplus" in m:
        typer.echo(f"  FER+ majority accuracy {m['ferplus']['accuracy']:.4f} on {m['ferplus']['n']} images")
    for lab, pc in m["per_class"].items():
        typer.echo(f"  {lab:9s} precision {pc['precision']:.3f}  recall {pc['recall']:.3f}  f1 {pc['f1']:.3f}"
                   f"  n={pc['support']}")


@app.command()
def export(
    artifact: Annotated[Path, typer.Argument(help="artifact folder with weights.pt and meta.json")],
    out: Annotated[Path, typer.Option(help="output folder for a slim serving artifact")],
    fp16: Annotated[bool, typer.Option(help="store weights as fp16 (half the size, fp32 compute)")] = True,
    data: DataOpt = None,
) -> None:
    """Re-export an artifact's ONNX model into a slim serving folder (model.onnx + meta.json).

    With --data, the exported model's own val/test metrics replace the training-time ones in its
    meta, so the numbers shipped are those of the file that serves.
    """
    from fer.model import compact_onnx, export_onnx, load_model

    out.mkdir(parents=True, exist_ok=True)
    model, meta = load_model(artifact)
    tmp = out / "model.fp32.onnx"
    export_onnx(model, tmp, meta["input_size"])
    if fp16:
        compact_onnx(tmp, out / "model.onnx")
        tmp.unlink()
    else:
        tmp.replace(out / "model.onnx")
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    if data:
        from fer.data import load_dataset

        meta = _measure(out, load_dataset(data), "training_time_bf16")
    shown = {k: round(v, 4) for k, v in meta["metrics"].items() if k.startswith(("val_", "test_"))}
    typer.echo(f"exported {out / 'model.onnx'}: {shown}")


def _measure(artifact: Path, ds, previous_key: str) -> dict:
    """Replace an artifact's val/test metrics with those of its own model.onnx; keep the old ones."""
    from fer.evaluate import evaluate_split
    from fer.inference import Predictor

    meta = json.loads((artifact / "meta.json").read_text())
    predictor = Predictor(artifact, threads=0)
    meta["metrics_measured"] = {"source": "onnxruntime on this model.onnx", previous_key: dict(meta["metrics"])}
    for split in ("val", "test"):
        if split in ds.splits:
            m = evaluate_split(predictor, ds[split])
            meta["metrics"] |= {f"{split}_acc": m["accuracy"], f"{split}_f1": m["macro_f1"], f"{split}_ece": m["ece"]}
    (artifact / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


@app.command()
def quantize(
    out: Annotated[Path, typer.Option(help="output folder for the int8 artifact")],
    model: Annotated[str | None, typer.Option(help="registry reference [default FER_MODEL]")] = None,
    data: DataOpt = None,
    calibration: Annotated[int, typer.Option(help="Training images to calibrate activation ranges on")] = 1000,
    seed: Annotated[int, typer.Option(help="which calibration images")] = 0,
    registry: RegistryOpt = None,
) -> None:
    """Quantise a model to int8 (static, calibrated) and measure it on val and test.

    Register the result with `fer registry register OUT --source-run "int8 of <ref>"`; promoting
    it is gated on validation accuracy like any version.
    """
    import numpy as np

    from fer.data import DataError, load_dataset
    from fer.quantize import quantize_artifact
    from fer.registry import RegistryError

    try:
        mv = _registry(registry).resolve(model or get_settings().model)
        ds = load_dataset(data or get_settings().data)
    except (RegistryError, DataError, FileNotFoundError) as e:
        _fail(str(e))
    train = ds["train"]
    pick = np.random.default_rng(seed).choice(len(train), min(calibration, len(train)), replace=False)
    quantize_artifact(mv.path, out, train.x[pick], parent=mv.ref, seed=seed)
    meta = _measure(out, ds, f"parent_{mv.ref}")
    before = meta["metrics_measured"][f"parent_{mv.ref}"]
    for key in ("val_acc", "test_acc"):
        if key in meta["metrics"] and key in before:
            typer.echo(f"{key}: {before[key]:.4f} ({mv.ref}) -> {meta['metrics'][key]:.4f} (int8), "
                       f"{(meta['metrics'][key] - before[key]) * 100:+.2f} points")
    typer.echo(f"int8 artifact: {out} ({(out / 'model.onnx').stat().st_size / 1e6:.1f} MB)")


@registry_app.command("list")
def registry_list(name: Annotated[str | None, typer.Argument()] = None, registry: RegistryOpt = None) -> None:
    """List versions with their aliases and validation/test accuracy."""
    from fer.registry import RegistryError

    try:
        versions = _registry(registry).list(name)
    except RegistryError as e:
        _fail(str(e))
    if not versions:
        typer.echo("no models registered")
    for mv in versions:
        m = mv.metrics
        acc = " ".join(f"{k}={m[k]:.4f}" for k in ("val_acc", "test_acc") if k in m)
        typer.echo(f"{mv.ref:24s} {','.join(mv.aliases) or '-':12s} {acc}  {mv.card.get('created', '')}")


@registry_app.command("show")
def registry_show(ref: str, registry: RegistryOpt = None) -> None:
    """Show a version's card: `name@production` or `name@3`."""
    from fer.registry import RegistryError

    try:
        mv = _registry(registry).resolve(ref)
    except RegistryError as e:
        _fail(str(e))
    typer.echo(json.dumps({"ref": mv.ref, "aliases": mv.aliases, "path": str(mv.path), **mv.card}, indent=2))


@registry_app.command("register")
def registry_register(
    artifact: Annotated[Path, typer.Argument(help="artifact folder (model.onnx + meta.json)")],
    name: Annotated[str, typer.Option(help="model name")] = "fer-resnet18",
    source_run: Annotated[str | None, typer.Option(help="run this artifact came from")] = None,
    promote: Annotated[bool, typer.Option(help="also promote it to production")] = False,
    registry: RegistryOpt = None,
) -> None:
    """Register an artifact as the next version of a model."""
    from fer.registry import RegistryError

    try:
        reg = _registry(registry)
        mv = reg.register(name, artifact, source_run=source_run)
        typer.echo(f"registered {mv.ref}")
        if promote:
            reg.promote(name, mv.version)
            typer.echo(f"promoted {mv.ref} to production")
    except RegistryError as e:
        _fail(str(e))


@registry_app.command("promote")
def registry_promote(
    ref: Annotated[str, typer.Argument(help="name@version")],
    alias: Annotated[str, typer.Option(help="alias to move")] = "production",
    force: Annotated[bool, typer.Option(help="skip the gate that refuses a worse model")] = False,
    registry: RegistryOpt = None,
) -> None:
    """Point an alias (default production) at a version."""
    from fer.registry import RegistryError, parse_ref

    try:
        name, version = parse_ref(ref)
        if not isinstance(version, int):
            _fail("promote takes name@VERSION, e.g. fer-resnet18@3")
        mv = _registry(registry).promote(name, version, alias, force=force)
    except RegistryError as e:
        _fail(str(e))
    typer.echo(f"{mv.ref} is now {alias}")


@registry_app.command("rollback")
def registry_rollback(
    name: str, alias: Annotated[str, typer.Option()] = "production", registry: RegistryOpt = None
) -> None:
    """Move an alias back to the version it had before its last promotion."""
    from fer.registry import RegistryError

    try:
        mv = _registry(registry).rollback(name, alias)
    except RegistryError as e:
        _fail(str(e))
    typer.echo(f"{alias} is back on {mv.ref}")


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

    extra = [f"{k}={v}" for k, v in (("trials", trials), ("timeout", timeout), ("epochs", epochs),
                                     ("subset", subset), ("storage", storage)) if v is not None]
    try:
        cfg = load_tune_config(config, [*(set_ or []), *extra])
        result = run_study(cfg, data_path=data, workers=workers, trackers=tracker)
    except (ConfigError, DataError, TrackerUnavailable) as e:
        _fail(str(e))
    typer.echo(f"study {result.study_name}: {result.n_complete} complete, {result.n_pruned} pruned, "
               f"{result.seconds / 60:.1f} min this session")
    typer.echo(f"best val_acc {result.best_value:.4f} with {result.best_params}")
    typer.echo(f"best config: {result.best_config}  (fer train --config {result.best_config})")
    if train_best:
        from fer.config import load_train_config
        from fer.train import default_run_dir, fit

        best = load_train_config(result.best_config)
        out = default_run_dir(best)
        fit_result = fit(best, data_path=data, run_dir=out, tracker=make_tracker(tracker or "local", out))
        mv = _registry(registry).register(best.name, fit_result.artifact_dir, source_run=str(out),
                                          tags=[f"study:{result.study_name}"])
        typer.echo(f"trained and registered {mv.ref} (not promoted; fer registry promote {mv.ref})")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address [env FER_HOST, default 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="port [env FER_PORT, default 8000]")] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes [env FER_WORKERS]")] = None,
    model: Annotated[str | None, typer.Option(help="registry reference [env FER_MODEL]")] = None,
    registry: RegistryOpt = None,
) -> None:
    """Serve the REST API and the web UI (the production model from the registry)."""
    import os

    from fer.api import ServeSettings
    from fer.api import serve as run_server

    # Options become environment variables so that every uvicorn worker process sees them too.
    for var, value in (("FER_HOST", host), ("FER_PORT", port), ("FER_WORKERS", workers), ("FER_MODEL", model),
                       ("FER_REGISTRY_DIR", registry)):
        if value is not None:
            os.environ[var] = str(value)
    run_server(ServeSettings())


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)
