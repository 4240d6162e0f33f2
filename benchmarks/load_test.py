"""Load test of the real app over real HTTP, in one run on one machine.

1. Throughput and latency: N requests (default 2,000) at concurrency C (default 16) with a
   one-face photo, for 1 and for 2 uvicorn workers (scaling on this machine's cores).
2. Memory: resident memory of the app (all its processes) over 10,000 requests.
3. Model swap under load: during a 2,000-request run a new version is promoted and the app is told
   to reload; every request must still succeed.
4. Micro-batching: the same run with FER_BATCH_MAX_WAIT_MS off (0) and on (2 and 5 ms), for the
   production (int8) model and for its fp32 parent.

    python benchmarks/load_test.py [--requests 2000] [--concurrency 16] [--rss-requests 10000]

The load generator (asyncio + httpx) runs on the same cores as the app and takes part of them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from _common import PHOTO, REPO, ms, rss_mib, running_app

ADMIN_TOKEN = "load-test-only-admin-token-0123"


async def run_load(url: str, requests: int, concurrency: int, during=None, progress=None, photo=PHOTO) -> dict:
    """Send `requests` POST /predict of `photo` at `concurrency`; `during(i)` runs as request i is sent.

    `photo` may be a list: request i sends photo i modulo their number, so a model whose cost
    depends on the face (an early exit) is measured on a mix of faces.
    """
    photos = [Path(p).read_bytes() for p in (photo if isinstance(photo, list | tuple) else [photo])]
    statuses: Counter = Counter()
    versions: Counter = Counter()
    latencies: list[float] = []
    next_i = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def worker():
            nonlocal next_i
            while next_i < requests:
                i, next_i = next_i, next_i + 1
                if during:
                    await during(i, client)
                data = photos[i % len(photos)]
                t = time.perf_counter()
                try:
                    r = await client.post("/predict", files={"file": ("a.jpg", data, "image/jpeg")})
                    statuses[r.status_code] += 1
                    if r.status_code == 200:
                        versions[r.json()["model"]["version"]] += 1
                except httpx.HTTPError as e:
                    statuses[type(e).__name__] += 1
                latencies.append(time.perf_counter() - t)
                if progress:
                    progress(i)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    errors = sum(n for s, n in statuses.items() if s != 200)
    return {
        "rps": requests / wall,
        "p50": ms(latencies, 50),
        "p99": ms(latencies, 99),
        "errors": errors,
        "statuses": dict(statuses),
        "versions": dict(versions),
        "wall": wall,
    }


def report(label: str, r: dict, requests: int, concurrency: int) -> None:
    print(
        f"{label}: {requests} requests at concurrency {concurrency}: {r['rps']:.1f} req/s, p50 {r['p50']:.1f} ms, "
        f"p99 {r['p99']:.1f} ms, errors {r['errors']} {r['statuses']}",
        flush=True,
    )


def throughput(port: int, requests: int, concurrency: int, workers: int, **env) -> dict:
    with running_app(port, FER_WORKERS=str(workers), **env):
        url = f"http://127.0.0.1:{port}"
        asyncio.run(run_load(url, 50, concurrency))  # warm-up: sessions, detectors, connections
        r = asyncio.run(run_load(url, requests, concurrency))
    report(f"{workers} worker(s)", r, requests, concurrency)
    return r


def memory(port: int, requests: int, concurrency: int) -> None:
    with running_app(port) as (proc, _):
        url = f"http://127.0.0.1:{port}"
        asyncio.run(run_load(url, 200, concurrency))  # warm-up: allocator pools and caches fill first
        base = rss_mib(proc.pid)
        samples = [(0, base)]

        def progress(i: int) -> None:
            if (i + 1) % 2000 == 0:
                samples.append((i + 1, rss_mib(proc.pid)))

        r = asyncio.run(run_load(url, requests, concurrency, progress=progress))
        print(
            f"memory over {requests} requests (after 200 warm-up): "
            + ", ".join(f"{n}: {m:.0f} MiB" for n, m in samples)
            + f"; growth {samples[-1][1] - base:+.1f} MiB; errors {r['errors']}",
            flush=True,
        )
        half = samples[len(samples) // 2][1]
        print(f"  second half growth {samples[-1][1] - half:+.1f} MiB", flush=True)


def swap_under_load(port: int, requests: int, concurrency: int) -> None:
    from fer.registry import open_registry

    with (
        tempfile.TemporaryDirectory(prefix="fer-load-") as tmp,
        running_app(port, FER_REGISTRY_DIR=f"{tmp}/registry", FER_ADMIN_TOKEN=ADMIN_TOKEN),
    ):
        url = f"http://127.0.0.1:{port}"
        reg = open_registry(Path(tmp) / "registry")
        shipped = reg.resolve("fer-resnet18@production")
        swapped = {}

        async def during(i: int, client: httpx.AsyncClient) -> None:
            if i == requests // 2 and not swapped:
                swapped["at"] = i
                # Register a second version (the same weights, a new version number) and promote it.
                mv = await asyncio.to_thread(reg.register, "fer-resnet18", shipped.path)
                await asyncio.to_thread(reg.promote, "fer-resnet18", mv.version, force=True)
                r = await client.post("/admin/reload", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
                swapped["reload"] = r.json()

        r = asyncio.run(run_load(url, requests, concurrency, during=during))
    report("model swap under load", r, requests, concurrency)
    print(f"  reload at request {swapped['at']}: {swapped['reload']}; answers by version {r['versions']}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rss-requests", type=int, default=10000)
    ap.add_argument("--port", type=int, default=8797)
    ap.add_argument("--batch-waits", default="0,2,5", help="FER_BATCH_MAX_WAIT_MS values to compare")
    ap.add_argument(
        "--batch-models", default="fer-resnet18@production,fer-resnet18@1", help="models to compare micro-batching on"
    )
    ap.add_argument("--skip", nargs="*", default=[], choices=["workers", "memory", "swap", "batching"])
    args = ap.parse_args()
    os.chdir(REPO)
    print(f"{os.cpu_count()} CPUs, photo {PHOTO.name} (one face), numpy {np.__version__}", flush=True)
    if "workers" not in args.skip:
        one = throughput(args.port, args.requests, args.concurrency, 1)
        two = throughput(args.port, args.requests, args.concurrency, 2)
        print(f"scaling 1 -> 2 workers: {two['rps'] / one['rps']:.2f}x throughput", flush=True)
    if "memory" not in args.skip:
        memory(args.port, args.rss_requests, args.concurrency)
    if "swap" not in args.skip:
        swap_under_load(args.port, args.requests, args.concurrency)
    if "batching" not in args.skip:
        for model in args.batch_models.split(","):
            for wait in args.batch_waits.split(","):
                print(f"micro-batching {model} FER_BATCH_MAX_WAIT_MS={wait}:", end=" ", flush=True)
                throughput(args.port, args.requests, args.concurrency, 1, FER_BATCH_MAX_WAIT_MS=wait, FER_MODEL=model)


if __name__ == "__main__":
    main()
