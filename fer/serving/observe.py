"""Request middleware: the per-client rate limit, request ids, metrics by route, the access log."""

from __future__ import annotations

import logging
import math
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import Response

from fer.config import Settings
from fer.guards import RateLimiter
from fer.metrics import Metrics
from fer.serving.errors import error_response

access_log = logging.getLogger("fer.access")
RATE_LIMITED_PATHS = {"/predict", "/predict/batch", "/predict/video", "/feedback"}


def route_label(request: Request) -> str:
    """The route template (never the raw path, so unknown URLs cannot explode label cardinality)."""
    if request.url.path.startswith("/ui"):
        return "/ui"
    route = request.scope.get("route")  # set by FastAPI's own routes
    endpoint = request.scope.get("endpoint")
    if route is None and endpoint is not None:
        # Plain Starlette routes and mounts (/openapi.json, the docs assets) leave only the
        # endpoint they dispatched to in the scope: find whose it is.
        route = next(
            (
                r
                for r in request.app.router.routes
                if endpoint in (getattr(r, "endpoint", None), getattr(r, "app", None))
            ),
            None,
        )
    return getattr(route, "path", None) or "unmatched"


def install_observer(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
    limiter = (
        RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
        if settings.rate_limit_per_minute
        else None
    )

    @app.middleware("http")
    async def observe(request: Request, call_next):
        start = time.perf_counter()
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        request.state.log = {}
        wait = (
            limiter.check(request.client.host if request.client else "unknown")
            if limiter and request.method == "POST" and request.url.path in RATE_LIMITED_PATHS
            else 0
        )
        if wait:
            response: Response = error_response(
                429,
                "rate_limited",
                f"more than {settings.rate_limit_per_minute} requests a minute from your "
                f"address; retry in {math.ceil(wait)} s",
                {"retry-after": str(math.ceil(wait))},
            )
            label = request.url.path  # refused before routing, so there is no route to read
        else:
            response = await call_next(request)
            label = route_label(request)
        elapsed = time.perf_counter() - start
        metrics.requests.labels(route=label, method=request.method, status=str(response.status_code)).inc()
        metrics.latency.labels(route=label).observe(elapsed)
        response.headers["x-request-id"] = rid
        if not label.startswith("/ui") and label != "/metrics":
            access_log.info(
                "request",
                extra={
                    "fields": {
                        "request_id": rid,
                        "method": request.method,
                        "route": label,
                        "status": response.status_code,
                        "latency_ms": round(elapsed * 1000, 2),
                        **request.state.log,
                    }
                },
            )
        return response
