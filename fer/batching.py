"""Dynamic micro-batching: face crops from concurrent requests share one model call.

Requests run in worker threads (detection, decoding); each hands its crops to `MicroBatcher` and
blocks for its probabilities. One batching thread takes the first waiting request, collects more
until `max_batch` faces or `max_wait` seconds have passed, runs the model once, and hands each
request its rows. Off by default: docs/benchmarks.md has the measurement behind that choice.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np


class MicroBatcher:
    """Batches calls of `fn` (crops (N, H, W) -> probabilities (N, C)) across threads."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], max_batch: int = 32, max_wait: float = 0.002):
        self.fn, self.max_batch, self.max_wait = fn, max_batch, max_wait
        self._queue: queue.Queue[tuple[np.ndarray, Future] | None] = queue.Queue()
        self._closed = False
        self.batches = 0  # model calls made, for tests and stats
        self._thread = threading.Thread(target=self._run, name="fer-microbatch", daemon=True)
        self._thread.start()

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        if self._closed:  # a request still on a replaced model: no batching thread any more
            return self.fn(crops)
        fut: Future = Future()
        self._queue.put((crops, fut))
        return fut.result()

    def close(self) -> None:
        """Stop after serving what is queued (a model swap retires the old service's batcher)."""
        self._closed = True
        self._queue.put(None)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                self._drain()
                return
            items, n = [first], len(first[0])
            deadline = time.perf_counter() + self.max_wait
            stop = False
            while n < self.max_batch:
                timeout = deadline - time.perf_counter()
                if timeout <= 0:
                    break
                try:
                    nxt = self._queue.get(timeout=timeout)
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                items.append(nxt)
                n += len(nxt[0])
            self._execute(items)
            if stop:
                self._drain()
                return

    def _drain(self) -> None:
        items = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                items.append(item)
        if items:
            self._execute(items)

    def _execute(self, items: list[tuple[np.ndarray, Future]]) -> None:
        self.batches += 1
        try:
            probs = self.fn(np.concatenate([crops for crops, _ in items]))
        except Exception as e:  # every waiting request gets the error, none hangs
            for _, fut in items:
                fut.set_exception(e)
            return
        start = 0
        for crops, fut in items:
            fut.set_result(probs[start : start + len(crops)])
            start += len(crops)
