"""Many images at once: files, folders and globs in, one row per face out (the `fer predict` command).

Every image goes through the same `EmotionService.analyze` as `POST /predict`. Unreadable files
give an error row instead of stopping the run; images are analysed on a thread pool (detection
and ONNX Runtime release the GIL).
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fer.images import ImageError, decode_photo

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".mpo"}


def expand_paths(inputs: Iterable[str]) -> list[Path]:
    """Files as given, folders searched recursively for images, globs expanded; sorted, unique.

    A name that matches nothing is kept, so it gets an error row ("no such file") rather than
    vanishing from the results.
    """
    out: list[Path] = []
    for raw in inputs:
        p = Path(raw).expanduser()
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif any(ch in raw for ch in "*?["):
            out += sorted(Path(m) for m in glob.glob(str(p), recursive=True) if Path(m).is_file())
        else:
            out.append(p)
    seen: set[Path] = set()
    return [p for p in out if not (p in seen or seen.add(p))]


@dataclass
class FileResult:
    """One image's outcome: its faces (an Analysis), or an error code and message."""

    path: Path
    analysis: Any = None
    rgb: Any = None  # kept only when annotated images are wanted (maybe decoded reduced)
    drawn: Any = None  # the analysis in `rgb`'s pixels
    error: str | None = None
    detail: str | None = None

    def rows(self) -> list[dict[str, Any]]:
        """One row per face (file, face, box, emotion, confidence, every probability), or one error row."""
        if self.error:
            return [{"file": str(self.path), "face": None, "error": self.error, "detail": self.detail}]
        if not self.analysis.faces:
            return [{"file": str(self.path), "face": None, "error": "no_face", "detail": "no face was found"}]
        return [
            {
                "file": str(self.path),
                "face": i,
                **f.flat(),
                **{f"p_{k}": round(v, 6) for k, v in f.probabilities.items()},
                "rotation": self.analysis.rotation,
            }
            for i, f in enumerate(self.analysis.faces)
        ]


def analyze_file(service, path: Path, max_pixels: int, keep_image: bool = False) -> FileResult:
    try:
        data = path.read_bytes()
    except OSError as e:
        return FileResult(path, error="unreadable", detail=f"{e.strerror or e}")
    try:
        photo = decode_photo(data, max_pixels)
    except ImageError as e:
        return FileResult(path, error=e.code, detail=str(e))
    drawn = service.analyze(photo.rgb, pixel_scale=photo.pixel_scale)  # in the decoded image, for --annotate
    return FileResult(path, drawn.scaled(photo), photo.rgb if keep_image else None, drawn=drawn)


@dataclass
class Summary:
    files: int = 0
    faces: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    emotions: dict[str, int] = field(default_factory=dict)

    def add(self, r: FileResult) -> None:
        self.files += 1
        if r.error or not r.analysis.faces:
            code = r.error or "no_face"
            self.errors[code] = self.errors.get(code, 0) + 1
            return
        self.faces += len(r.analysis.faces)
        for f in r.analysis.faces:
            self.emotions[f.emotion] = self.emotions.get(f.emotion, 0) + 1


def analyze_paths(
    service, paths: list[Path], threads: int, max_pixels: int = 40_000_000, keep_images: bool = False
) -> Iterator[FileResult]:
    """Results in input order, computed `threads` at a time.

    Submitted in windows of a few per thread, so a folder of thousands of photos never holds
    more than a handful of decoded images in memory.
    """
    threads = max(1, threads)
    window = threads * 4
    with ThreadPoolExecutor(threads, thread_name_prefix="fer-batch") as pool:
        for start in range(0, len(paths), window):
            chunk = paths[start : start + window]
            yield from pool.map(lambda p: analyze_file(service, p, max_pixels, keep_images), chunk)
