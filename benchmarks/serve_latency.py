"""Serving speed, in one run on one machine.

1. Per-face model latency, batch 1, 1 thread: ONNX Runtime vs PyTorch eager (same architecture).
2. Face detection latency on a 640x480 photo.
3. The app's cold start (process start to /ready).
4. End-to-end `POST /predict` over real HTTP with a one-face photo: throughput and p50/p99 at
   concurrency 1 and 8.

    python benchmarks/serve_latency.py [--requests 300] [--baseline fer-resnet18@3] [--model-only]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from _common import PHOTO, REPO, ms, running_app, timeit


def model_latency(artifact: Path, n: int) -> None:
    import torch

    from fer.inference import Predictor
    from fer.model import build_model

    torch.set_num_threads(1)
    pred = Predictor(artifact, threads=1)
    face = np.random.default_rng(0).integers(0, 256, (1, 48, 48), dtype=np.uint8)
    # As served: the artifact's whole test-time policy (its views, the members fused in its graph,
    # the temperature), through the one code path serving and `fer evaluate` share.
    served = timeit(lambda: pred.predict_proba(face), n)
    pol = pred.policy
    print(
        f"model per face as served (batch 1, 1 thread, {pred.meta.arch}; {pol.views} view(s), "
        f"{max(len(pol.members), 1)} network(s)): ONNX Runtime p50 {ms(served, 50):.2f} ms"
    )
    if pol.members:
        return  # an ensemble graph has no single torch architecture to compare with
    ort = timeit(lambda: pred.logits(face), n)
    # Latency does not depend on the weights' values: same architecture, eval mode, no grad.
    model = build_model(pred.meta.arch).eval()
    x = torch.from_numpy(pred.preprocess(face))
    with torch.inference_mode():
        eager = timeit(lambda: model(x), n)
    print(
        f"model per face (batch 1, 1 thread, {pred.meta.arch}): ONNX Runtime p50 {ms(ort, 50):.2f} ms, "
        f"PyTorch eager p50 {ms(eager, 50):.2f} ms -> {statistics.median(eager) / statistics.median(ort):.1f}x"
    )


def budget_ratio(artifact: Path, baseline: Path, n: int, rounds: int = 3) -> None:
    """Per-face cost as served against a baseline model's, timed alternately in one process.

    Issue #14's budget is 5 ms on the machine where version 3 took 0.69 ms: 7.2x version 3. A ratio
    measured in one run carries across machines; absolute milliseconds do not (one int8 network
    took 0.69 ms on an AVX2 EPYC and 1.95 ms on an AVX-512 one, the same code and files).
    With an early exit the cost depends on the face: both paths are timed, and the cost per face
    is their average weighted by the share of PublicTest that exits early (`fer calibrate` stores it).
    """
    from fer.inference import Predictor

    face = np.random.default_rng(0).integers(0, 256, (1, 48, 48), dtype=np.uint8)
    base_pred, pred = Predictor(baseline, threads=1), Predictor(artifact, threads=1)
    ee = pred.policy.early_exit
    # What is timed: the baseline, and the served policy; with an early exit, each of its two paths
    # (a threshold every face reaches, and one none does), since one random face takes only one.
    runs = {"baseline": (base_pred, base_pred.policy)}
    if ee:
        for k, threshold in {"sure": 1e-6, "unsure": 1.0}.items():
            exit_at = ee.model_copy(update={"threshold": threshold})
            runs[k] = (pred, pred.policy.model_copy(update={"early_exit": exit_at}))
    else:
        runs["served"] = (pred, pred.policy)
    p50 = {k: [] for k in runs}
    for _ in range(rounds):  # alternated, so drift on a shared machine hits all alike
        for k, (pr, pol) in runs.items():
            p50[k].append(ms(timeit(lambda pr=pr, pol=pol: pr.predict_proba(face, policy=pol), n), 50))
    cost = {k: statistics.median(v) for k, v in p50.items()}
    base = cost["baseline"]
    if ee:  # weighed by the share of PublicTest sure enough to stop at the first views
        share = pred.meta.calibration["exit_share"]
        served = share * cost["sure"] + (1 - share) * cost["unsure"]
        print(
            f"early exit after {ee.views} of {pred.policy.views} views: a sure face {cost['sure']:.2f} ms, "
            f"an unsure one {cost['unsure']:.2f} ms ({cost['unsure'] / base:.2f}x); {share:.1%} of PublicTest is sure"
        )
    else:
        served = cost["served"]
    print(
        f"per face as served {served:.2f} ms vs baseline {base:.2f} ms ({rounds} alternated rounds of {n}): "
        f"{served / base:.2f}x; issue #14's budget is 5 / 0.69 = {5 / 0.69:.1f}x "
        f"({'within' if served / base <= 5 / 0.69 else 'over'})"
    )


def detection_latency(n: int) -> None:
    from PIL import Image

    from fer.faces import FaceDetector

    det = FaceDetector()
    rgb = np.asarray(Image.open(REPO / "fer/assets/examples/grace_hopper.jpg").convert("RGB").resize((640, 480)))
    s = timeit(lambda: det.detect(rgb), n, warmup=5)
    print(f"face detection on 640x480 (YuNet, 1 face): p50 {ms(s, 50):.1f} ms, p99 {ms(s, 99):.1f} ms")


def http_load(port: int, requests: int, concurrency: int) -> None:
    import httpx

    data = PHOTO.read_bytes()
    url = f"http://127.0.0.1:{port}/predict"
    clients = [httpx.Client(timeout=30) for _ in range(concurrency)]

    def one(i: int) -> float:
        t = time.perf_counter()
        r = clients[i % concurrency].post(url, files={"file": ("a.jpg", data, "image/jpeg")})
        assert r.status_code == 200, r.text
        return time.perf_counter() - t

    for i in range(10):
        one(i)
    t = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        lat = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - t
    print(
        f"POST /predict, concurrency {concurrency}: {requests / wall:.1f} req/s, p50 {ms(lat, 50):.1f} ms, "
        f"p99 {ms(lat, 99):.1f} ms ({requests} requests, 0 errors)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--port", type=int, default=8799)
    ap.add_argument("--baseline", help="also time this reference (e.g. fer-resnet18@3) against production")
    ap.add_argument("--model-only", action="store_true", help="only the per-face model timings")
    args = ap.parse_args()
    from fer.registry import open_registry

    mv = open_registry(os.environ.get("FER_REGISTRY_DIR", ".fer/registry")).resolve("fer-resnet18@production")
    print(f"{mv.ref}, {os.cpu_count()} CPUs")
    model_latency(mv.path, 500)
    if args.baseline:
        budget_ratio(
            mv.path, open_registry(os.environ.get("FER_REGISTRY_DIR", ".fer/registry")).resolve(args.baseline).path, 300
        )
    if args.model_only:
        return
    detection_latency(100)
    with running_app(args.port, FER_UI="true") as (_, cold):  # cold start as users run it, with the UI
        print(f"cold start (python app.py to /ready 200): {cold:.1f} s")
        for c in (1, 8):
            http_load(args.port, args.requests, c)


if __name__ == "__main__":
    main()
