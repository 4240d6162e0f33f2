"""`fer predict`: emotions of every face in files, folders and globs, as JSONL or CSV rows."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from fer.cli.common import RegistryOpt, fail, settings

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
        for r in _progress(results, len(files)):
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


def _progress(it, total: int):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the serving install has no tqdm: no bar
        return it
    return tqdm(it, total=total, unit=" images", file=sys.stderr, dynamic_ncols=True, leave=False)


def _write_annotated(r, folder: Path) -> None:
    from PIL import Image

    from fer.annotate import annotate
    from fer.inference import rotate

    rgb = rotate(r.rgb, r.analysis.rotation) if r.analysis.rotation else r.rgb
    Image.fromarray(annotate(rgb, r.analysis.faces)).save(folder / f"{r.path.stem}.annotated.jpg", quality=90)
