"""`fer predict` (files, folders, globs -> JSONL/CSV rows) and `fer video` (tracked, smoothed faces)."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from fer.cli.common import RegistryOpt, fail, open_registry_for, settings
from fer.progress import progress_bar

ROW_FIELDS = ["file", "face", "x", "y", "w", "h", "emotion", "confidence", "rotation"]


def _service(model: str | None, registry: str | None, threads: int):
    from fer.serving.holder import ModelRefused, load_service

    s = settings()
    update = (
        {"model_threads": 1} | ({"model": model} if model else {}) | ({"registry_dir": registry} if registry else {})
    )
    try:
        return load_service(s.model_copy(update=update)), s
    except ModelRefused as e:
        fail(str(e))


def predict(
    paths: Annotated[list[str], typer.Argument(help="image files, folders (searched recursively) or globs")],
    out: Annotated[Path | None, typer.Option(help="write rows here (.jsonl or .csv) instead of stdout")] = None,
    annotate: Annotated[Path | None, typer.Option(help="also write each image with its faces drawn here")] = None,
    threads: Annotated[int, typer.Option(help="images analysed at once (default: every core)")] = 0,
    model: Annotated[str | None, typer.Option(help="registry reference (env FER_MODEL)")] = None,
    registry: RegistryOpt = None,
) -> None:
    """Detect every face and its emotion in many images: one row per face (file, face index,
    box, emotion, confidence, every class probability), an error row for each file that cannot
    be read or has no face, and a summary on stderr."""
    from fer.batch import Summary, analyze_paths, expand_paths

    files = expand_paths(paths)
    if not files:
        fail("no images found in " + ", ".join(paths))
    if out is not None and out.suffix.lower() not in {".jsonl", ".csv"}:
        fail(f"--out must end in .jsonl or .csv, not {out.name!r}")
    threads = threads or os.cpu_count() or 1
    service, s = _service(model, registry, threads)
    if annotate:
        annotate.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    sink = open(out, "w", newline="") if out else sys.stdout  # noqa: SIM115 - closed below
    writer = None
    try:
        results = analyze_paths(service, files, threads, s.max_pixels, keep_images=annotate is not None)
        for r in progress_bar(results, total=len(files), unit=" images"):
            summary.add(r)
            for row in r.rows():
                if out is not None and out.suffix.lower() == ".csv":
                    if writer is None:
                        labels = service.predictor.labels
                        fields = [*ROW_FIELDS, *(f"p_{lab}" for lab in labels), "error", "detail"]
                        writer = csv.DictWriter(sink, fieldnames=fields, extrasaction="ignore")
                        writer.writeheader()
                    writer.writerow(row)
                else:
                    sink.write(json.dumps(row) + "\n")
            if annotate and r.analysis is not None and r.analysis.faces:
                _write_annotated(r, annotate)
    finally:
        if out is not None:
            sink.close()
        service.close()
    emotions = ", ".join(f"{k} {v}" for k, v in sorted(summary.emotions.items(), key=lambda kv: -kv[1]))
    errors = ", ".join(f"{k} {v}" for k, v in sorted(summary.errors.items()))
    typer.echo(
        f"{summary.files} files, {summary.faces} faces ({emotions or 'none'}); "
        f"{sum(summary.errors.values())} without a result ({errors or 'none'})",
        err=True,
    )


def _write_annotated(r, folder: Path) -> None:
    from PIL import Image

    from fer.annotate import annotate
    from fer.inference import rotate

    rgb = rotate(r.rgb, r.drawn.rotation) if r.drawn.rotation else r.rgb
    Image.fromarray(annotate(rgb, r.drawn.faces)).save(folder / f"{r.path.stem}.annotated.jpg", quality=90)


def video(
    path: Annotated[Path, typer.Argument(help="a video file (MP4, AVI, WebM, MOV: what OpenCV reads)")],
    out: Annotated[Path | None, typer.Option(help="write the annotated video here (.mp4)")] = None,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="write one row per frame and face here")] = None,
    every: Annotated[int, typer.Option(help="analyse every N-th frame")] = 1,
    fps: Annotated[float | None, typer.Option(help="instead of --every: analyse about F frames a second")] = None,
    smoothing: Annotated[
        float, typer.Option(help="weight of each new frame in a track's moving average (1 = no smoothing)")
    ] = 0.4,
    model: Annotated[str | None, typer.Option(help="registry reference (env FER_MODEL)")] = None,
    registry: RegistryOpt = None,
) -> None:
    """Track every face through a video and smooth its emotion over time. Prints one summary per
    track (frames seen, dominant emotion, the time share of each emotion) as JSON."""
    from fer.video import VideoError, process_video

    if every < 1 or (fps is not None and fps <= 0) or not 0 < smoothing <= 1:
        fail("--every must be >= 1, --fps > 0 and --smoothing in (0, 1]")
    if not path.is_file():
        fail(f"no such file: {path}")
    service, _ = _service(model, registry, 1)
    bar = progress_bar(unit=" frames")
    try:
        result = process_video(
            service,
            path,
            every=every,
            fps=fps,
            alpha=smoothing,
            out_video=out,
            on_frame=(lambda n: bar.update(1)) if bar is not None else None,
        )
    except VideoError as e:
        fail(str(e))
    finally:
        if bar is not None:
            bar.close()
        service.close()
    if csv_path is not None:
        labels = service.predictor.labels
        with open(csv_path, "w", newline="") as f:
            fields = [
                "frame",
                "time_s",
                "track",
                "x",
                "y",
                "w",
                "h",
                "emotion",
                "confidence",
                "smoothed_emotion",
                "smoothed_confidence",
                *(f"p_{lab}" for lab in labels),
            ]
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            for row in result.frames:
                probs = row["probabilities"]
                w.writerow(
                    {k: v for k, v in row.items() if k != "probabilities"} | {f"p_{lab}": probs[lab] for lab in labels}
                )
    typer.echo(
        json.dumps(
            {
                "file": str(path),
                "fps": result.fps,
                "frames_analyzed": result.frames_analyzed,
                "duration_s": result.duration_s,
                "tracks": result.tracks,
            },
            indent=2,
        )
    )


def _fer2013(data: str):
    from fer.data import DataError, load_dataset

    try:
        return load_dataset(data, cache_dir=settings().cache)
    except DataError as e:
        fail(str(e))


def model_test_report(artifact: Path, data: str, ferplus: Path | None, ds=None) -> dict:
    """Run the behavioural model tests of an artifact on PublicTest (FER-2013 from `data`, or `ds`)."""
    from fer.inference import Predictor
    from fer.modeltests import run_model_tests

    ds = ds or _fer2013(data)
    return run_model_tests(Predictor(artifact, threads=0), ds["val"], ferplus)


def test_model(
    model: Annotated[str, typer.Argument(help="registry reference, e.g. fer-resnet18@3")],
    data: Annotated[str | None, typer.Option(help="FER-2013 CSV(.gz) (env FER_DATA)")] = None,
    ferplus: Annotated[Path | None, typer.Option(help="fer2013new.csv, for the clear-faces test")] = None,
    golden: Annotated[Path | None, typer.Option(help="golden answers to compare with (models/golden.json)")] = None,
    write_golden: Annotated[
        Path | None, typer.Option(help="record this model's answers on 300 fixed PublicTest crops here")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="write the report here (JSON)")] = None,
    registry: RegistryOpt = None,
) -> None:
    """Behavioural tests of a model on PublicTest: invariance (flip rates), directional, minimum
    functionality on clear faces, and slices (per class; brightness, contrast, sharpness). Exits 1
    when a check fails; promotion with --data runs the same tests as its gate."""
    from fer.registry import RegistryError

    try:
        mv = open_registry_for(registry).resolve(model)
    except RegistryError as e:
        fail(str(e))
    data = data or settings().data
    if not data:
        fail("no data given: pass --data PATH (or set FER_DATA) to fer2013.csv[.gz]")
    from fer.inference import Predictor
    from fer.modeltests import compare_golden, make_golden

    ds = _fer2013(data)  # loaded once for the tests and both golden-set uses
    report = model_test_report(mv.path, data, ferplus, ds) | {"model": mv.ref}
    predictor = Predictor(mv.path, threads=0)
    if golden is not None:
        report["golden"] = compare_golden(predictor, json.loads(golden.read_text()), ds["val"])
    if write_golden is not None:
        write_golden.write_text(json.dumps(make_golden(predictor, ds["val"], ds.checksum, model=mv.ref)))
    if out is not None:
        out.write_text(json.dumps(report, indent=2))
    for c in report["checks"]:
        mark = "ok  " if c["passed"] else "FAIL"
        typer.echo(f"{mark} {c['name']:34s} {c['value']:.4f} {c['direction']} {c['threshold']}")
    if "golden" in report:
        g = report["golden"]
        typer.echo(f"golden set: {g['changed']} of {g['n']} answers differ from {g['reference']}")
    typer.echo(f"{mv.ref}: {'passed' if report['passed'] else 'FAILED: ' + ', '.join(report['failed'])}")
    if not report["passed"]:
        raise typer.Exit(1)


def feedback_export(
    out: Annotated[Path, typer.Option(help="output folder: train/<emotion>/ and test/<emotion>/ images")],
    feedback_dir: Annotated[Path | None, typer.Option(help="the store (env FER_FEEDBACK_DIR)")] = None,
    holdout: Annotated[float, typer.Option(help="share of crops kept for evaluation only")] = 0.2,
) -> None:
    """Turn collected feedback into an image-folder dataset (what fer train --data reads): each
    crop once, with its latest label; the held-out part is chosen by the crop's hash, so it stays
    held out however often you export."""
    from fer.feedback import export

    root = feedback_dir or (Path(settings().feedback_dir) if settings().feedback_dir else None)
    if root is None or not (root / "feedback.jsonl").is_file():
        fail(f"no feedback store at {root or '(unset)'}: pass --feedback-dir or set FER_FEEDBACK_DIR")
    if not 0 <= holdout < 1:
        fail("--holdout must be in [0, 1)")
    counts = export(root, out, holdout)
    for part, by_label in counts.items():
        typer.echo(
            f"{part}: {sum(by_label.values())} crops " + " ".join(f"{k}={v}" for k, v in sorted(by_label.items()))
        )


def pipeline(
    config: Annotated[Path, typer.Option("--config", "-c", help="experiments/pipeline.yaml")] = Path(
        "experiments/pipeline.yaml"
    ),
    set_: Annotated[list[str] | None, typer.Option("--set", help="override, e.g. --set promote=false")] = None,
    data: Annotated[str | None, typer.Option(help="FER-2013 CSV(.gz) or image folder (env FER_DATA)")] = None,
    clearml: Annotated[bool, typer.Option(help="run as a ClearML pipeline (offline session without a server)")] = False,
    queue: Annotated[str | None, typer.Option(help="with --clearml: run each step on this agent queue")] = None,
) -> None:
    """Run the training pipeline: data, tune (when the config names a study), train (or fine-tune,
    with `init`), evaluate against production, model tests, register, promote through the gate.
    Steps whose inputs did not change come from the cache. Prints the summary as JSON."""
    from fer.config import ConfigError
    from fer.data import DataError
    from fer.pipeline import load_pipeline_config, run_pipeline

    try:
        cfg, base = load_pipeline_config(config, [*(set_ or []), *([f"data={data}"] if data else [])])
        if clearml or queue:
            from fer.clearml_pipeline import run_clearml_pipeline

            summary = run_clearml_pipeline(cfg, base, settings(), queue)
        else:
            summary = run_pipeline(cfg, base, settings())
    except (ConfigError, DataError, FileNotFoundError) as e:
        fail(str(e))
    typer.echo(json.dumps(summary, indent=2, default=str))
