"""Request guards in front of the API: streamed body limits, a stall timer, a per-client rate limit.

Kept apart from the routes so they read as routes; `fer.serving.app.create_app` installs these.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from starlette.exceptions import HTTPException as StarletteHTTPException


class BodyTooLarge(StarletteHTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"the request body exceeds the limit of {limit:,} bytes")
        self.limit = limit


class BodyTimeout(StarletteHTTPException):
    def __init__(self, timeout: float):
        super().__init__(408, f"the request body stalled: no data for {timeout:g} s")


class UploadGuard:
    """ASGI middleware bounding request bodies as they stream in, so none is read whole first.

    - More than `max_bytes` (declared or counted): 413. A declared Content-Length over the limit is
      refused before a byte is read; a chunked or lying body is cut off at the limit.
    - No data for `timeout` seconds: 408, so a client that opens an upload and stalls (or sends a
      byte a minute) cannot hold a connection and a request slot for ever.

    The errors are HTTPExceptions raised from `receive`, so FastAPI passes them through body
    parsing to the app's handler, which answers in the API's JSON error format. (FastAPI's own
    `max_body_size` answers plain text, overriding the app's error response.)
    """

    def __init__(
        self, app, max_bytes: int, timeout: float, skip_prefix: str = "/ui", per_path: dict[str, int] | None = None
    ):
        """`per_path`: other limits for some paths (e.g. a batch upload of several files)."""
        self.app, self.max_bytes, self.timeout, self.skip_prefix = app, max_bytes, timeout, skip_prefix
        self.per_path = per_path or {}

    async def __call__(self, scope, receive, send):
        # The Gradio UI enforces its own upload limit (max_file_size) in its own error format.
        if scope["type"] != "http" or scope["path"].startswith(self.skip_prefix):
            return await self.app(scope, receive, send)
        received, body_done = 0, False
        limit = self.per_path.get(scope["path"], self.max_bytes)
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), b"")

        async def guarded_receive():
            nonlocal received, body_done
            if body_done:  # after the body only a disconnect can come, whenever it comes: no timer
                return await receive()
            if declared.isdigit() and int(declared) > limit:
                raise BodyTooLarge(limit)
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except TimeoutError:
                raise BodyTimeout(self.timeout) from None
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, guarded_receive, send)


class RateLimiter:
    """Token bucket per client address: `per_minute` sustained, `burst` at once.

    In memory and per process (each worker limits on its own); behind a proxy, start uvicorn with
    `--forwarded-allow-ips` so the client address is the real one, or limit at the proxy.
    """

    MAX_CLIENTS = 10_000  # bound the table; the least recently seen client is forgotten first

    def __init__(self, per_minute: int, burst: int):
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def check(self, client: str) -> float:
        """0 if the request may go ahead, else the seconds until it may."""
        now = time.monotonic()
        tokens, last = self.buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
        self.buckets[client] = (tokens - 1 if wait == 0 else tokens, now)
        if len(self.buckets) > self.MAX_CLIENTS:
            self.buckets.popitem(last=False)
        return wait
