"""Micro-batching: concurrent requests' crops share model calls, each gets exactly its own answer."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from conftest import EXAMPLES

from fer.batching import MicroBatcher


def test_concurrent_callers_are_batched_and_get_their_own_rows():
    calls = []

    def fn(x):
        calls.append(len(x))
        return x.reshape(len(x), -1).mean(1, keepdims=True).astype(np.float32)  # each row's own value

    b = MicroBatcher(fn, max_batch=64, max_wait=0.05)
    inputs = [np.full((1 + i % 3, 4, 4), i, np.uint8) for i in range(24)]
    with ThreadPoolExecutor(24) as pool:
        outs = list(pool.map(b, inputs))
    for i, out in enumerate(outs):
        assert out.shape == (1 + i % 3, 1) and (out == i).all()
    assert sum(calls) == sum(len(x) for x in inputs)
    assert len(calls) < 24 and max(calls) > 3  # fewer model calls than requests
    b.close()


def test_max_batch_caps_a_call_and_errors_reach_every_waiter():
    calls = []

    def fn(x):
        calls.append(len(x))
        if (x == 255).any():
            raise ValueError("bad crop")
        return np.zeros((len(x), 1), np.float32)

    b = MicroBatcher(fn, max_batch=4, max_wait=0.05)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(b, [np.zeros((1, 2, 2), np.uint8)] * 8))
    assert max(calls) <= 4
    results = []

    def call(x):
        try:
            b(x)
            results.append("ok")
        except ValueError:
            results.append("error")

    threads = [threading.Thread(target=call, args=(np.full((1, 2, 2), 255, np.uint8),)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert results == ["error", "error"]
    b.close()
    assert b(np.zeros((2, 2, 2), np.uint8)).shape == (2, 1)  # after close: runs inline, never hangs


def test_batched_service_answers_like_the_unbatched_one(tmp_path):
    from fastapi.testclient import TestClient

    from fer.config import Settings
    from fer.serving.app import create_app

    photos = [(EXAMPLES / n).read_bytes() for n in ("astronaut.jpg", "grace_hopper.jpg", "group.jpg")]

    def run(**kw):
        with TestClient(create_app(Settings(ui=False, registry_dir=str(tmp_path), **kw))) as c:
            with ThreadPoolExecutor(6) as pool:
                rs = list(
                    pool.map(lambda d: c.post("/predict", files={"file": ("a.jpg", d, "image/jpeg")}), photos * 4)
                )
            return [r.json() for r in rs], c.app.state.holder.service

    plain, _ = run()
    batched, service = run(batch_max_wait_ms=20)
    for a, b in zip(plain, batched, strict=True):
        assert a["face_count"] == b["face_count"]
        for fa, fb in zip(a["faces"], b["faces"], strict=True):
            assert fa["emotion"] == fb["emotion"] and abs(fa["confidence"] - fb["confidence"]) < 1e-4
    assert 0 < service.batcher.batches <= 12  # every request went through the batcher (sharing: unit tests)
