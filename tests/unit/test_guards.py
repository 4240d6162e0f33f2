"""The request guards directly: the token-bucket rate limiter and the streamed body limits."""

from __future__ import annotations

import asyncio

import pytest

from fer.guards import BodyTimeout, BodyTooLarge, RateLimiter, UploadGuard


def test_rate_limiter_allows_a_burst_then_asks_to_wait():
    rl = RateLimiter(per_minute=60, burst=3)
    assert [rl.check("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = rl.check("a")
    assert 0 < wait <= 1.0  # one token a second at 60/minute
    assert rl.check("b") == 0.0  # clients are independent


def test_rate_limiter_table_is_bounded(monkeypatch):
    monkeypatch.setattr(RateLimiter, "MAX_CLIENTS", 5)
    rl = RateLimiter(per_minute=60, burst=1)
    for i in range(20):
        rl.check(f"client-{i}")
    assert len(rl.buckets) == 5 and "client-19" in rl.buckets and "client-0" not in rl.buckets


def run_guard(messages, headers=(), max_bytes=10, timeout=5.0, path="/predict"):
    """Drive UploadGuard with scripted `receive` messages; returns what the inner app read."""
    read = []

    async def app(scope, receive, send):
        while True:
            m = await receive()
            read.append(m)
            if not m.get("more_body"):
                return

    async def receive():
        if not messages:
            await asyncio.sleep(3600)  # a client that stalls
        return messages.pop(0)

    scope = {"type": "http", "path": path, "headers": list(headers)}
    asyncio.run(UploadGuard(app, max_bytes=max_bytes, timeout=timeout)(scope, receive, None))
    return read


def body(data: bytes, more: bool = False) -> dict:
    return {"type": "http.request", "body": data, "more_body": more}


def test_body_within_the_limit_passes_through():
    assert [m["body"] for m in run_guard([body(b"12345", True), body(b"678")])] == [b"12345", b"678"]


def test_declared_length_over_the_limit_is_refused_before_reading():
    with pytest.raises(BodyTooLarge):
        run_guard([body(b"x")], headers=[(b"content-length", b"11")])


def test_streamed_body_is_cut_at_the_limit():
    with pytest.raises(BodyTooLarge):
        run_guard([body(b"123456", True), body(b"789012")])


def test_a_stalled_body_times_out():
    with pytest.raises(BodyTimeout):
        run_guard([body(b"12", True)], timeout=0.2)


def test_the_ui_is_left_to_gradio():
    assert run_guard([body(b"x" * 100)], path="/ui/upload")[0]["body"] == b"x" * 100
