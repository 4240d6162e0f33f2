"""FER-2013 reading (Kaggle CSV or image folders) into uint8 arrays, splits, batching and augmentation."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fer.files import sha256_file
from fer.progress import progress_bar

log = logging.getLogger(__name__)

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
IMAGE_SIZE = 48
N_PIXELS = IMAGE_SIZE * IMAGE_SIZE
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif"}
# Kaggle's Usage column -> our split names. PublicTest selects models, PrivateTest is reported once.
USAGE_TO_SPLIT = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
# Folder names seen in the popular image-folder copies of FER-2013.
_FOLDER_ALIASES = {"anger": "angry", "happiness": "happy", "sadness": "sad", "surprised": "surprise"}


class DataError(ValueError):
    """Unusable data, with a message that names the file (and row) at fault."""


@dataclass
class Split:
    """One split: images (N, 48, 48) uint8, labels (N,) int64, and source rows for joins."""

    x: np.ndarray
    y: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def class_counts(self) -> list[int]:
        return np.bincount(self.y, minlength=len(LABELS)).tolist()

    def subset(self, idx: np.ndarray) -> Split:
        return Split(self.x[idx], self.y[idx], self.rows[idx])


@dataclass
class Dataset:
    splits: dict[str, Split]
    source: str
    checksum: str  # sha256 of the CSV file, or of the sorted file list + bytes for folders
    layout: str  # "csv" or "folders"
    extra: dict = field(default_factory=dict)

    def __getitem__(self, name: str) -> Split:
        if name not in self.splits:
            raise DataError(f"{self.source}: no split {name!r} (have {', '.join(self.splits)})")
        return self.splits[name]


DEFAULT_CACHE = Path.home() / ".cache" / "fer"  # `FER_CACHE` (Settings.cache) overrides it


def resolve_data_path(path: str | Path | None) -> Path:
    """The data path (callers pass `--data` or `Settings.data`), with a helpful error when missing."""
    raw = path
    if not raw:
        raise DataError(
            "no data given: pass --data PATH (or set FER_DATA) to fer2013.csv[.gz] or to a folder "
            "with train/<emotion>/ and test/<emotion>/ images"
        )
    p = Path(raw).expanduser()
    if not p.exists():
        raise DataError(f"data path does not exist: {p}")
    return p


def load_dataset(
    path: str | Path | None, val_fraction: float = 0.1, seed: int = 0, cache_dir: Path | str | None = None
) -> Dataset:
    """Load FER-2013 from a Kaggle CSV (plain or .gz) or an image-folder tree.

    Args:
        path: file or folder.
        val_fraction: share of train held out (stratified) when the layout has no PublicTest.
        seed: seed of that held-out split.
        cache_dir: where the decoded CSV is kept, keyed by the file's checksum (default
            `~/.cache/fer`); it survives between runs, so only the first parse costs ~10 s.
    """
    p = resolve_data_path(path)
    if p.is_dir():
        return _load_folders(p, val_fraction, seed)
    return _load_csv_cached(p, val_fraction, seed, Path(cache_dir or DEFAULT_CACHE))


# --- CSV -----------------------------------------------------------------------------------------


def _open_text(path: Path) -> io.TextIOBase:
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _load_csv_cached(path: Path, val_fraction: float, seed: int, cache_dir: Path) -> Dataset:
    # Parsing 83M pixel values takes ~10 s; a decoded copy keyed by the file's checksum makes
    # every later run (training, evaluation, tests) start in well under a second.
    checksum = sha256_file(path)
    cache = cache_dir / f"fer2013-{checksum[:16]}.npz"
    if cache.is_file():
        try:
            with np.load(cache) as z:
                x, y, usage = z["x"], z["y"], z["usage"]
            return _csv_dataset(path, checksum, x, y, usage, val_fraction, seed)
        except (OSError, KeyError, ValueError):
            log.warning("ignoring unreadable cache %s", cache)
    log.info("parsing %s once (~10-100 s); later loads use the cache %s", path.name, cache)
    x, y, usage = parse_csv(path, progress=True)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, x=x, y=y, usage=usage)
        os.replace(tmp, cache)
    except OSError as e:  # a read-only home must not stop training
        log.warning("could not write data cache %s: %s", cache, e)
    return _csv_dataset(path, checksum, x, y, usage, val_fraction, seed)


def parse_csv(path: Path, progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse a Kaggle-format CSV into images, labels and usage codes (0 train, 1 val, 2 test, -1 none).

    `progress` shows a row counter on stderr (tqdm, when installed), since a first parse of the
    full file takes a while on a slow machine.

    Raises:
        DataError: naming the file and 1-based line of the first malformed row.
    """
    usage_codes = {"Training": 0, "PublicTest": 1, "PrivateTest": 2}
    with _open_text(path) as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise DataError(f"{path}: empty file") from None
        if header[:2] != ["emotion", "pixels"] or len(header) > 3 or (len(header) == 3 and header[2] != "Usage"):
            raise DataError(f"{path}: header must be 'emotion,pixels[,Usage]', found {','.join(header)!r}")
        has_usage = len(header) == 3
        labels, usages, pixel_rows = [], [], []
        rows = progress_bar(reader, desc=f"parsing {path.name}", unit=" rows", unit_scale=True,
                            mininterval=1.0) if progress else reader  # fmt: skip
        for line_no, row in enumerate(rows, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"{path}, line {line_no}: expected {len(header)} columns, found {len(row)}")
            try:
                label = int(row[0])
            except ValueError:
                raise DataError(f"{path}, line {line_no}: emotion {row[0]!r} is not an integer") from None
            if not 0 <= label < len(LABELS):
                raise DataError(f"{path}, line {line_no}: emotion {label} outside 0..{len(LABELS) - 1}")
            n = row[1].count(" ") + 1 if row[1].strip() else 0
            if n != N_PIXELS:
                raise DataError(f"{path}, line {line_no}: expected {N_PIXELS} pixels, found {n}")
            if has_usage and row[2] not in usage_codes:
                raise DataError(f"{path}, line {line_no}: Usage {row[2]!r} is not one of {list(usage_codes)}")
            labels.append(label)
            usages.append(usage_codes[row[2]] if has_usage else -1)
            pixel_rows.append(row[1])
    if not labels:
        raise DataError(f"{path}: no data rows")
    # One C-level parse of all rows at once is ~20x faster than a parse per row.
    try:
        flat = np.array(" ".join(pixel_rows).split(), dtype=np.int64)
    except ValueError:
        bad = next(i for i, r in enumerate(pixel_rows) if not all(t.isdigit() for t in r.split()))
        raise DataError(f"{path}, line {bad + 2}: pixel values must be integers in 0..255") from None
    if flat.min() < 0 or flat.max() > 255:
        bad = int(np.argmax((flat < 0) | (flat > 255)) // N_PIXELS)
        raise DataError(f"{path}, line {bad + 2}: pixel values must be integers in 0..255")
    x = flat.astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    return x, np.asarray(labels, dtype=np.int64), np.asarray(usages, dtype=np.int8)


def _csv_dataset(path, checksum, x, y, usage, val_fraction, seed) -> Dataset:
    rows = np.arange(len(y))
    if (usage == -1).all():  # no Usage column: everything is training data
        usage = np.zeros_like(usage)
    splits = {
        name: Split(x[usage == code], y[usage == code], rows[usage == code])
        for code, name in enumerate(("train", "val", "test"))
        if (usage == code).any()
    }
    if "val" not in splits and "train" in splits:
        splits["train"], splits["val"] = split_stratified(splits["train"], val_fraction, seed)
    return Dataset(splits, str(path), checksum, "csv")


# --- image folders -------------------------------------------------------------------------------


def _label_of_folder(name: str) -> int | None:
    key = _FOLDER_ALIASES.get(name.lower(), name.lower())
    return LABELS.index(key) if key in LABELS else None


def _load_folders(root: Path, val_fraction: float, seed: int) -> Dataset:
    from PIL import Image, UnidentifiedImageError

    found: dict[str, Split] = {}
    h = hashlib.sha256()
    names = {"train": "train", "training": "train", "val": "val", "validation": "val", "test": "test"}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower() in names):
        xs, ys = [], []
        for cls_dir in sorted(p for p in sub.iterdir() if p.is_dir()):
            label = _label_of_folder(cls_dir.name)
            if label is None:
                raise DataError(f"{cls_dir}: unknown emotion folder (expected one of {', '.join(LABELS)})")
            for f in sorted(cls_dir.iterdir()):
                if f.suffix.lower() not in IMAGE_EXTENSIONS:
                    continue
                data = f.read_bytes()
                h.update(f"{sub.name}/{cls_dir.name}/{f.name}".encode())
                h.update(data)
                try:
                    with Image.open(io.BytesIO(data)) as im:
                        im = im.convert("L")
                        if im.size != (IMAGE_SIZE, IMAGE_SIZE):
                            im = im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
                        xs.append(np.asarray(im, dtype=np.uint8))
                except (UnidentifiedImageError, OSError, ValueError) as e:
                    raise DataError(f"{f}: cannot decode image ({e})") from None
                ys.append(label)
        if xs:
            split = names[sub.name.lower()]
            found[split] = Split(np.stack(xs), np.asarray(ys, dtype=np.int64), np.arange(len(ys)))
    if "train" not in found:
        raise DataError(f"{root}: no train/<emotion>/ images found")
    if "val" not in found:
        found["train"], found["val"] = split_stratified(found["train"], val_fraction, seed)
    return Dataset(found, str(root), h.hexdigest(), "folders")


# --- FER+ labels (fer2013new.csv) ------------------------------------------------------------------

# FER+ vote columns in FER-2013 label order; contempt, unknown and NF (not a face) are not ours.
FERPLUS_COLUMNS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")


def ferplus_votes(path: Path, rows: np.ndarray) -> np.ndarray:
    """FER+ annotators' votes (N, 7) in FER-2013 class order, for the given CSV row positions.

    Joined by row position, as the data README requires (the file's image names stop being row
    indices after row 59).
    """
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        try:
            idx = [header.index(c) for c in FERPLUS_COLUMNS]
        except ValueError:
            raise DataError(f"{path}: not a FER+ label file (columns {', '.join(FERPLUS_COLUMNS)} expected)") from None
        votes = np.asarray([[int(row[i] or 0) for i in idx] for row in reader])
    if len(rows) and rows.max() >= len(votes):
        raise DataError(f"{path}: {len(votes)} rows, but the data has row {rows.max()}")
    return votes[rows]


def soft_targets(data: Dataset, split: Split, ferplus: Path, weight: float) -> np.ndarray:
    """(N, 7) float32 training targets: (1 - weight) x the FER-2013 label + weight x the FER+ vote shares.

    FER+ had ten annotators relabel every FER-2013 image; their vote distribution is a softer,
    less noisy target than the one original label. Images whose votes hold none of our seven
    emotions (all contempt, unknown or not-a-face) keep their one-hot label.

    Raises:
        DataError: the data is not the FER-2013 CSV (FER+ joins by CSV row), or the FER+ file has
            a different number of rows than that CSV.
    """
    if data.layout != "csv":
        raise DataError("FER+ soft labels join by FER-2013 CSV row: they need the CSV layout, not image folders")
    n_rows = sum(len(s) for s in data.splits.values())
    votes = ferplus_votes(Path(ferplus), split.rows).astype(np.float32)
    with open(ferplus, newline="") as f:
        ferplus_rows = sum(1 for _ in f) - 1
    if ferplus_rows != n_rows:
        raise DataError(f"{ferplus}: {ferplus_rows} rows, but {data.source} has {n_rows}: not its FER+ labels")
    onehot = np.eye(len(LABELS), dtype=np.float32)[split.y]
    total = votes.sum(1, keepdims=True)
    shares = np.where(total > 0, votes / np.maximum(total, 1), onehot)
    return ((1 - weight) * onehot + weight * shares).astype(np.float32)


# --- splits and batches --------------------------------------------------------------------------


def stratified_indices(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a class-stratified random `fraction` of `y` (at least one per present class)."""
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = max(1, round(len(idx) * fraction))
        picked.append(rng.choice(idx, size=k, replace=False))
    return np.sort(np.concatenate(picked))


def split_stratified(split: Split, val_fraction: float, seed: int) -> tuple[Split, Split]:
    val_idx = stratified_indices(split.y, val_fraction, seed)
    mask = np.ones(len(split), dtype=bool)
    mask[val_idx] = False
    return split.subset(np.flatnonzero(mask)), split.subset(val_idx)


def iterate_batches(
    n: int, batch_size: int, shuffle: bool, rng: np.random.Generator | None = None, drop_last: bool = False
) -> Iterator[np.ndarray]:
    """Index batches over range(n)."""
    order = rng.permutation(n) if shuffle and rng is not None else np.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for i in range(0, stop, batch_size):
        yield order[i : i + batch_size]


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    return n // batch_size if drop_last and n >= batch_size else math.ceil(n / batch_size)
