"""Helpers shared by the benchmark scripts: timing, percentiles, and starting the real app."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PHOTO = REPO / "fer" / "assets" / "examples" / "astronaut.jpg"


def timeit(fn, n: int, warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def ms(samples: list[float], q: float) -> float:
    return float(np.percentile(samples, q) * 1000)


@contextlib.contextmanager
def running_app(port: int, cwd: Path = REPO, **env: str):
    """`python app.py` (of the checkout `cwd`) on 127.0.0.1:`port` with extra FER_* settings, stopped afterwards.

    Yields the process and its cold start (seconds from launch to `/ready` answering 200).
    """
    import httpx

    full_env = {**os.environ, "FER_PORT": str(port), "FER_LOG_LEVEL": "WARNING", "FER_UI": "false", **env}
    t = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "app.py"], cwd=cwd, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while True:
            if time.perf_counter() - t > 120:
                raise SystemExit("app did not become ready in 120 s")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        yield proc, time.perf_counter() - t
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants (uvicorn workers), in MiB."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
    return total / 1024
