"""Where the shadow model runs: one background thread at the lowest CPU priority, with a bound.

The shadow's answers are only statistics; production's are what users wait for. Its work goes to
a single thread niced to 19 (Linux lets a process lower any of its own threads' priority), so the
scheduler hands a busy core to request threads (and to anything else on the machine) first, and
a queue bound drops work rather than letting a backlog grow under load.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

log = logging.getLogger(__name__)


def _lowest_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):  # not Linux, or not allowed: it still runs, at normal priority
        log.info("shadow thread runs at normal priority (setpriority unavailable)")


class ShadowWorker:
    def __init__(self, max_pending: int = 32):
        self.max_pending = max_pending
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="fer-shadow", initializer=_lowest_priority)
        self._pending = 0
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., None], *args) -> bool:
        """Queue `fn(*args)`; False (nothing queued) when `max_pending` calls are already waiting."""
        with self._lock:
            if self._pending >= self.max_pending:
                return False
            self._pending += 1
        self._pool.submit(fn, *args).add_done_callback(self._done)
        return True

    def _done(self, fut: Future) -> None:
        with self._lock:
            self._pending -= 1
        if not fut.cancelled() and fut.exception() is not None:
            log.warning("shadow comparison failed: %r", fut.exception())

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
