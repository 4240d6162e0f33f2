"""User feedback from production: confirmations and corrections of a face's emotion, opt-in.

When a deployment sets `FER_FEEDBACK_DIR`, the server keeps the aligned 48x48 crops of its recent
answers in memory for a short window (`RecentAnswers`), so `POST /feedback` can refer to a face by
the answer's `prediction_id` instead of sending the photo again. Only the crop, the model's
answer and the user's label are stored (`FeedbackStore`), never the photo. `export` turns the
store into an image-folder dataset that `fer train` reads, with a held-out part for evaluation.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fer.files import atomic_write


class FeedbackError(ValueError):
    """Feedback that cannot be taken; `status`/`code` as the API answers it."""

    status, code = 400, "bad_feedback"


class UnknownPrediction(FeedbackError):
    status, code = 404, "unknown_prediction"


class FeedbackFull(FeedbackError):
    status, code = 507, "feedback_store_full"


@dataclass
class Answer:
    time: float
    model: str
    crops: np.ndarray  # (faces, H, W) uint8, aligned as the model saw them
    emotions: list[str]


class RecentAnswers:
    """The last `max_items` answers for `window_s` seconds, in memory only (thread-safe)."""

    def __init__(self, window_s: float = 600, max_items: int = 1000):
        self.window_s, self.max_items = window_s, max_items
        self._items: OrderedDict[str, Answer] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, crops: np.ndarray, emotions: list[str], model: str) -> str:
        pid = uuid.uuid4().hex
        with self._lock:
            self._items[pid] = Answer(time.monotonic(), model, crops, emotions)
            self._expire()
        return pid

    def get(self, pid: str) -> Answer | None:
        with self._lock:
            self._expire()
            return self._items.get(pid)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._items and (len(self._items) > self.max_items
                               or now - next(iter(self._items.values())).time > self.window_s):  # fmt: skip
            self._items.popitem(last=False)


def _png(crop: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, format="PNG")
    return buf.getvalue()


class FeedbackStore:
    """Feedback on disk: `crops/<sha256>.png` (written atomically, deduplicated) and one JSON line
    per feedback in `feedback.jsonl` (appended under a file lock, so several workers can share it).

    Args:
        root: the folder (`FER_FEEDBACK_DIR`).
        max_records: refuse more than this many (507) until the store is exported and emptied.
        retention_days: records older than this are dropped by `prune` (run at start-up).
    """

    def __init__(self, root: Path | str, max_records: int = 10_000, retention_days: float = 30):
        self.root = Path(root)
        self.max_records, self.retention_days = max_records, retention_days
        (self.root / "crops").mkdir(parents=True, exist_ok=True)
        self.log = self.root / "feedback.jsonl"

    @contextlib.contextmanager
    def _locked(self):
        with open(self.root / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def records(self) -> list[dict[str, Any]]:
        if not self.log.is_file():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def add(self, answer: Answer, face: int, label: str, pid: str) -> dict[str, Any]:
        data = _png(answer.crops[face])
        digest = hashlib.sha256(answer.crops[face].tobytes()).hexdigest()
        record = {"time": time.time(), "prediction_id": pid, "face": face, "crop": f"{digest}.png",
                  "model": answer.model, "predicted": answer.emotions[face], "label": label,
                  "agreed": answer.emotions[face] == label}  # fmt: skip
        with self._locked():
            if len(self.records()) >= self.max_records:
                raise FeedbackFull(f"the feedback store holds its limit of {self.max_records:,} records "
                                   "(FER_FEEDBACK_MAX_RECORDS); export it with fer feedback export")  # fmt: skip
            crop = self.root / "crops" / record["crop"]
            if not crop.exists():
                atomic_write(crop, data)
            with open(self.log, "a") as f:
                f.write(json.dumps(record) + "\n")
        return record

    def prune(self) -> int:
        """Drop records older than the retention period (and crops no record uses); how many went."""
        cutoff = time.time() - self.retention_days * 86400
        with self._locked():
            records = self.records()
            keep = [r for r in records if r["time"] >= cutoff]
            if len(keep) == len(records):
                return 0
            atomic_write(self.log, "".join(json.dumps(r) + "\n" for r in keep))
            used = {r["crop"] for r in keep}
            for p in (self.root / "crops").glob("*.png"):
                if p.name not in used:
                    p.unlink()
        return len(records) - len(keep)


def export(root: Path | str, out: Path | str, holdout: float = 0.2) -> dict[str, dict[str, int]]:
    """The feedback as an image-folder dataset: `out/train/<label>/` and `out/test/<label>/`.

    Each crop appears once (its latest label wins). Which part a crop lands in follows from its
    hash, so re-exporting after more feedback never moves a held-out crop into training.
    """
    store, out = FeedbackStore(root), Path(out)
    latest = {r["crop"]: r["label"] for r in sorted(store.records(), key=lambda r: r["time"])}
    counts: dict[str, dict[str, int]] = {"train": {}, "test": {}}
    for crop, label in sorted(latest.items()):
        part = "test" if int(crop[:8], 16) / 0xFFFFFFFF < holdout else "train"
        dest = out / part / label
        dest.mkdir(parents=True, exist_ok=True)
        (dest / crop).write_bytes((store.root / "crops" / crop).read_bytes())
        counts[part][label] = counts[part].get(label, 0) + 1
    return counts
