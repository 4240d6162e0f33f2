"""`fer export`, `quantize`, `calibrate`, `ensemble`: commands that make a new artifact from models.

Each writes a folder (model.onnx + meta.json) that `fer registry register` adds as a version;
promotion then goes through the gate like any other version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fer.cli.common import DataOpt, ModelOpt, RegistryOpt, fail, open_registry_for
from fer.cli.common import settings as run_settings


def _split_metrics(meta) -> dict[str, float]:
    """The val/test metrics a command prints after measuring an artifact, rounded for reading."""
    return {k: round(v, 4) for k, v in meta.metrics.items() if k.startswith(("val_", "test_"))}


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
    from fer.artifact import ArtifactError
    from fer.data import DataError, load_dataset
    from fer.evaluate import measure_artifact
    from fer.model import export_serving_artifact

    try:
        meta = export_serving_artifact(artifact, out, fp16=fp16)
        if data:
            meta = measure_artifact(out, load_dataset(data, cache_dir=run_settings().cache), "training_time_bf16")
    except (ArtifactError, DataError, FileNotFoundError) as e:
        fail(str(e))
    shown = _split_metrics(meta)
    typer.echo(f"exported {out / 'model.onnx'}: {shown}")


def quantize(
    out: Annotated[Path, typer.Option(help="output folder for the int8 artifact")],
    model: ModelOpt = None,
    data: DataOpt = None,
    calibration: Annotated[int, typer.Option(help="Training images to calibrate activation ranges on")] = 1000,
    seed: Annotated[int, typer.Option(help="which calibration images")] = 0,
    registry: RegistryOpt = None,
) -> None:
    """Quantise a model to int8 (static, calibrated) and measure it on val and test.

    Register the result with `fer registry register OUT --source-run "int8 of <ref>"`; promoting
    it is gated on validation accuracy like any version.
    """
    from fer.data import DataError, load_dataset
    from fer.quantize import quantize_and_measure
    from fer.registry import RegistryError

    settings = run_settings()
    try:
        mv = open_registry_for(registry).resolve(model or settings.model)
        ds = load_dataset(data or settings.data, cache_dir=settings.cache)
    except (RegistryError, DataError, FileNotFoundError) as e:
        fail(str(e))
    changes = quantize_and_measure(mv.path, out, ds, mv.ref, calibration, seed)
    for key, (before, after) in changes.items():
        typer.echo(f"{key}: {before:.4f} ({mv.ref}) -> {after:.4f} (int8), {(after - before) * 100:+.2f} points")
    typer.echo(f"int8 artifact: {out} ({(out / 'model.onnx').stat().st_size / 1e6:.1f} MB)")


def calibrate(
    out: Annotated[Path, typer.Option(help="output folder for the calibrated artifact")],
    model: ModelOpt = None,
    data: DataOpt = None,
    flip: Annotated[
        bool | None, typer.Option(help="average with the mirrored crop (default: keep the model's policy)")
    ] = None,
    crop: Annotated[int | None, typer.Option(help="crop windows of this side (a crop-trained network)")] = None,
    crops: Annotated[str | None, typer.Option(help="center or five (centre + corners) windows")] = None,
    zoom: Annotated[
        list[float] | None,
        typer.Option(help="also a view of each window zoomed by this factor (repeat: --zoom 1.0833 --zoom 0.9167)"),
    ] = None,
    exit_views: Annotated[
        int | None,
        typer.Option(help="answer sure faces from this many first views alone (0 = no early exit)"),
    ] = None,
    exit_threshold: Annotated[
        float | None, typer.Option(help="with --exit-views: the top probability that counts as sure")
    ] = None,
    registry: RegistryOpt = None,
) -> None:
    """Fit temperature scaling on PublicTest and write a calibrated artifact (same network file).

    Set the rest of the test-time policy here too (--flip, --crop, --crops, --zoom, --exit-views);
    the temperature is fitted for that policy (and the first views' own, for an early exit), and
    val/test metrics are re-measured through it. Register the result with `fer registry register
    OUT`; promotion goes through the gate as for any version.
    """
    from pydantic import ValidationError

    from fer.artifact import ArtifactError, read_meta
    from fer.calibrate import calibrate_artifact
    from fer.data import DataError, load_dataset
    from fer.registry import RegistryError

    settings = run_settings()
    try:
        mv = open_registry_for(registry).resolve(model or settings.model)
        base = read_meta(mv.path).policy
        update = {k: v for k, v in {"flip": flip, "crop": crop, "crops": crops, "zooms": zoom}.items() if v is not None}
        if exit_views == 0:
            update["early_exit"] = None
        elif exit_views is not None or exit_threshold is not None:
            old = base.early_exit.model_dump() if base.early_exit else {}
            update["early_exit"] = old | {
                k: v for k, v in {"views": exit_views, "threshold": exit_threshold}.items() if v is not None
            }
        policy = base.model_validate(base.model_dump() | update)
        ds = load_dataset(data or settings.data, cache_dir=settings.cache)
        r = calibrate_artifact(mv.path, out, ds, mv.ref, policy)
    except ValidationError as e:
        err = e.errors()[0]
        fail(f"invalid policy: {'.'.join(map(str, err['loc'])) or 'policy'}: {err['msg']}")
    except (RegistryError, DataError, ArtifactError, FileNotFoundError, KeyError) as e:
        fail(str(e))
    typer.echo(
        f"temperature {r['temperature']:.3f}: PublicTest ECE {r['val_ece_before']:.4f} -> {r['val_ece_after']:.4f}, "
        f"NLL {r['val_nll_before']:.4f} -> {r['val_nll_after']:.4f}"
    )
    if r["exit_temperature"] is not None:
        typer.echo(
            f"early exit: first views' temperature {r['exit_temperature']:.3f}, "
            f"{r['val_exit_share']:.1%} of PublicTest answered by them alone"
        )
    typer.echo(f"calibrated artifact: {out}")


def ensemble(
    models: Annotated[list[str], typer.Argument(help="two or more registry references")],
    out: Annotated[Path, typer.Option(help="output folder for the fused artifact")],
    data: Annotated[
        str | None, typer.Option(help="FER-2013 data: measure the fused model on val and test (env FER_DATA)")
    ] = None,
    registry: RegistryOpt = None,
) -> None:
    """Fuse models into one ONNX graph that averages their probabilities (one artifact, one session).

    Then `fer calibrate` fits its temperature and `fer registry register` adds it as a version.
    """
    from fer.artifact import ArtifactError
    from fer.data import DataError, load_dataset
    from fer.ensemble import fuse
    from fer.evaluate import measure_artifact
    from fer.registry import RegistryError

    try:
        reg = open_registry_for(registry)
        mvs = [reg.resolve(m) for m in models]
        fuse([mv.path for mv in mvs], out, refs=[mv.ref for mv in mvs])
        if data:
            meta = measure_artifact(out, load_dataset(data, cache_dir=run_settings().cache), "members")
            shown = _split_metrics(meta)
            typer.echo(f"measured: {shown}")
    except (RegistryError, DataError, ArtifactError, FileNotFoundError) as e:
        fail(str(e))
    typer.echo(f"fused {len(mvs)} members into {out / 'model.onnx'}")
