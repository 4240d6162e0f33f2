"""POST /predict throughput of this checkout against another commit, on one machine, interleaved.

Throughput moves by several percent between hours and machines, so a speed-up is only a number
when both sides run side by side: this checks out `--baseline` (a commit) into a temporary git
worktree, serves each in turn with one worker, sends the same one-face photo at the same
concurrency, and alternates the two `--repeats` times. The app of each side is imported from its
own folder (python puts the script's folder first), with its own shipped registry.

    python benchmarks/throughput_vs.py --baseline 02ccb75 [--requests 2000] [--concurrency 16] [--photo P]

A model whose cost depends on the face (an early exit) needs a photo of each kind: the default
astronaut's face is a sure one; `--photo fer/assets/examples/grace_hopper.jpg` is an unsure one.
Repeat `--photo` to alternate them request by request (`--photo fer/assets/examples/astronaut.jpg
--photo fer/assets/examples/grace_hopper.jpg`): the mix is measured rather than estimated.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

from _common import PHOTO, REPO, running_app
from load_test import run_load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="commit to compare against (e.g. the one before a change)")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--port", type=int, default=8798)
    ap.add_argument("--photo", type=Path, action="append", help="a one-face photo to send (repeat to alternate)")
    args = ap.parse_args()
    args.photo = args.photo or [PHOTO]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    photos = ", ".join(p.name for p in args.photo)
    print(f"{os.cpu_count()} CPUs, photos {photos}, concurrency {args.concurrency}, {args.requests} requests")
    with tempfile.TemporaryDirectory() as tmp:
        base_dir = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(base_dir), args.baseline], cwd=REPO, check=True,
                       capture_output=True)  # fmt: skip
        try:
            sides = {f"baseline {args.baseline}": base_dir, f"this checkout {head.strip()}": REPO}
            rps: dict[str, list[float]] = {k: [] for k in sides}
            for rep in range(args.repeats):
                for label, cwd in sides.items():
                    with running_app(args.port, cwd=cwd, FER_WORKERS="1"):
                        url = f"http://127.0.0.1:{args.port}"
                        asyncio.run(run_load(url, 100, args.concurrency, photo=args.photo))  # warm-up
                        r = asyncio.run(run_load(url, args.requests, args.concurrency, photo=args.photo))
                    rps[label].append(r["rps"])
                    print(f"run {rep + 1} {label}: {r['rps']:.1f} req/s, p50 {r['p50']:.1f} ms, "
                          f"p99 {r['p99']:.1f} ms, errors {r['errors']}", flush=True)  # fmt: skip
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_dir)], cwd=REPO, capture_output=True)
    (b, bv), (n, nv) = rps.items()
    print(f"median: {b} {statistics.median(bv):.1f} req/s, {n} {statistics.median(nv):.1f} req/s "
          f"-> {statistics.median(nv) / statistics.median(bv):.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
