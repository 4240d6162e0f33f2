"""The FastAPI app: lifespan model loading, routes, error-to-HTTP mapping, metrics and request logs.

`create_app()` wires everything; `app.py` only calls it. The Gradio UI is mounted at `/ui` and
calls the same `EmotionService` as `POST /predict`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import os
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI, File, Request, UploadFile
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartParser

from fer.guards import BodyTimeout, BodyTooLarge, RateLimiter, UploadGuard
from fer.images import ImageError, decode_image
from fer.inference import Analysis, EmotionService
from fer.metrics import Metrics

log = logging.getLogger(__name__)
access_log = logging.getLogger("fer.access")


class ServeSettings(BaseSettings):
    """Serving settings from `FER_*` environment variables (or passed in explicitly)."""

    model_config = SettingsConfigDict(env_prefix="FER_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1)
    model: str = "fer-resnet18@production"
    registry_dir: str = ".fer/registry"
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1)
    max_pixels: int = Field(40_000_000, ge=1)
    detector_threshold: float = Field(0.7, gt=0, lt=1)
    max_faces: int = Field(64, ge=1)
    model_threads: int = Field(1, ge=0)
    batch_max_wait_ms: float = Field(0.0, ge=0, le=100)  # micro-batching across requests; 0 = off
    batch_max_size: int = Field(32, ge=1)  # faces per batched model call
    ui: bool = True
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"  # one JSON object per line, for Fluentd
    admin_token: str | None = None  # enables POST /admin/reload; no default, never committed
    reload_interval: float = Field(0.0, ge=0)  # seconds between registry polls; 0 = off
    body_timeout: float = Field(30.0, gt=0)  # seconds the next chunk of a request body may take
    cors_origins: list[str] = []  # browser origins allowed to call the API; none by default
    rate_limit_per_minute: int = Field(0, ge=0)  # POST /predict per client address; 0 = off
    rate_limit_burst: int = Field(20, ge=1)  # requests a client may send at once before limiting

    @field_validator("admin_token")
    @classmethod
    def _strong_token(cls, v: str | None) -> str | None:
        if v is not None and (len(v) < 16 or v.lower() in {"changeme", "admin", "password", "secret"}):
            raise ValueError("FER_ADMIN_TOKEN must be at least 16 characters and not a default word")
        return v


class Box(BaseModel):
    x: int
    y: int
    w: int
    h: int


class FaceOut(BaseModel):
    box: Box
    emotion: str
    confidence: float
    probabilities: dict[str, float]
    detection_score: float


class PredictionOut(BaseModel):
    emotion: str = Field(description="emotion of the most prominent (largest) face")
    confidence: float = Field(description="its probability")
    faces: list[FaceOut] = Field(description="every face found, largest first")
    face_count: int
    whole_image: bool = Field(description="no face was detected; the small image was classified as a face crop")
    image: dict[str, int] = Field(description="width and height after EXIF orientation")
    model: dict[str, str]
    timings_ms: dict[str, float]

    model_config = {"json_schema_extra": {"examples": [{
        "emotion": "happy", "confidence": 0.91, "face_count": 1, "whole_image": False,
        "faces": [{"box": {"x": 178, "y": 63, "w": 90, "h": 113}, "emotion": "happy", "confidence": 0.91,
                   "probabilities": {"angry": 0.01, "disgust": 0.0, "fear": 0.02, "happy": 0.91, "sad": 0.01,
                                     "surprise": 0.02, "neutral": 0.03}, "detection_score": 0.93}],
        "image": {"width": 512, "height": 512}, "model": {"name": "fer-resnet18", "version": "2"},
        "timings_ms": {"detect": 16.0, "inference": 2.1}}]}}


class ErrorOut(BaseModel):
    error: str = Field(description="machine-readable code")
    detail: str = Field(description="what went wrong and what to do")


ERRORS = {
    400: {"model": ErrorOut, "description": "empty upload, missing `file` field, or corrupt image"},
    413: {"model": ErrorOut, "description": "upload or image too large"},
    415: {"model": ErrorOut, "description": "not an image, or an unsupported format"},
    422: {"model": ErrorOut, "description": "no face found in the image"},
    503: {"model": ErrorOut, "description": "no model loaded"},
}


def _error(status: int, code: str, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


class ModelRefused(RuntimeError):
    """A model that failed to load or to pass the smoke prediction."""


def resolve_model(settings: ServeSettings):
    from fer.registry import open_registry

    return open_registry(settings.registry_dir).resolve(settings.model)


def load_service(settings: ServeSettings, mv=None) -> EmotionService:
    """Build the service for the configured registry reference (or a resolved version), smoke-tested.

    Raises:
        ModelRefused: the model cannot be loaded or gives no sane prediction.
    """
    import numpy as np

    try:
        mv = mv or resolve_model(settings)
        svc = EmotionService.from_artifact(mv.path, name=mv.name, version=mv.version,
                                           threads=settings.model_threads,
                                           score_threshold=settings.detector_threshold, max_faces=settings.max_faces,
                                           batch_max_wait=settings.batch_max_wait_ms / 1000,
                                           batch_max_size=settings.batch_max_size)
        # Smoke prediction: one grey crop must give a probability distribution over the labels.
        side = svc.predictor.input_size
        probs = svc.predictor.predict_proba(np.full((1, side, side), 128, dtype=np.uint8))
    except Exception as e:  # whatever breaks, the model is refused with the reason
        raise ModelRefused(f"model {settings.model} refused: {type(e).__name__}: {e}") from e
    if probs.shape != (1, len(svc.predictor.labels)) or not np.isfinite(probs).all() or \
            abs(float(probs.sum()) - 1) > 1e-3:
        svc.close()
        raise ModelRefused(f"model {mv.ref} refused: smoke prediction is not a probability distribution")
    return svc


def analysis_json(a: Analysis, service: EmotionService) -> dict[str, Any]:
    p = a.primary
    return {
        "emotion": p.emotion, "confidence": p.confidence,
        "faces": [jsonable_encoder(f) for f in a.faces], "face_count": len(a.faces), "whole_image": a.is_crop,
        "image": {"width": a.width, "height": a.height},
        "model": {"name": service.predictor.name, "version": service.predictor.version},
        "timings_ms": {"detect": round(a.detect_s * 1000, 2), "inference": round(a.infer_s * 1000, 2)},
    }


def create_app(settings: ServeSettings | None = None, service: EmotionService | None = None) -> FastAPI:
    """Build the app. `service` injects a ready model (tests); otherwise the lifespan loads one."""
    settings = settings or ServeSettings()
    metrics = Metrics()

    reload_lock = asyncio.Lock()

    async def reload_model(force: bool = False) -> dict[str, Any]:
        """Load the registry's current version and swap it in if it differs (or `force`).

        The swap is one reference assignment: requests in flight keep the service object they
        started with, new requests get the new one, none fails. A model that fails to load or
        its smoke test is refused and the old one keeps serving.
        """
        async with reload_lock:
            current = app.state.service
            try:
                mv = await run_in_threadpool(resolve_model, settings)
                if current is not None and not force and str(mv.version) == current.predictor.version \
                        and mv.name == current.predictor.name:
                    return {"status": "unchanged", "model": {"name": mv.name, "version": str(mv.version)}}
                new = await run_in_threadpool(load_service, settings, mv)
            except Exception as e:  # refused: counted, logged, and the old model stays
                metrics.model_load_failures.inc()
                serving = f"{current.predictor.name}@{current.predictor.version}" if current else "nothing"
                log.error("model load refused (%s keeps serving): %s", serving, e)
                raise ModelRefused(str(e)) from e
            app.state.service = new
            if current is not None:
                current.close()  # its batcher finishes what is queued; later calls run unbatched
            metrics.set_model(new.predictor.name, new.predictor.version)
            log.info("now serving %s@%s", new.predictor.name, new.predictor.version)
            return {"status": "reloaded", "model": {"name": new.predictor.name, "version": new.predictor.version}}

    async def poll_registry() -> None:
        while True:
            await asyncio.sleep(settings.reload_interval)
            try:
                await reload_model()
            except ModelRefused:
                pass  # already logged and counted

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if app.state.service is None:
            try:
                await reload_model()  # sets the model metrics when it loads one
            except ModelRefused:  # a bad model must not stop the app: /ready answers 503 until one loads
                metrics.model_ready.set(0)
        else:  # injected (tests)
            p = app.state.service.predictor
            metrics.set_model(p.name, p.version)
        poller = asyncio.create_task(poll_registry()) if settings.reload_interval > 0 else None
        yield
        if poller is not None:
            poller.cancel()
        metrics.close()

    app = FastAPI(
        title="fer: facial emotion recognition",
        description="Detects every face in a photo and classifies its emotion (angry, disgust, fear, happy, "
                    "sad, surprise, neutral) with a ResNet-18 trained on FER-2013. The web UI is at /ui.",
        version="0.1.0", lifespan=lifespan,
    )
    limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst) \
        if settings.rate_limit_per_minute else None
    body_limit = settings.max_upload_bytes + 64 * 1024  # the multipart envelope on top of the file
    # Added before the logging middleware below, so it runs inside it: its 408s are logged and counted.
    app.add_middleware(UploadGuard, max_bytes=body_limit, timeout=settings.body_timeout)
    if settings.cors_origins:  # closed unless origins are configured: no CORS headers at all
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["content-type", "authorization", "x-request-id"],
                           expose_headers=["x-request-id"], max_age=600)
    # Starlette spools multipart files over 1 MiB to a temporary file on disk; UploadGuard bounds
    # bodies to body_limit, so keep them in memory: an upload is never written to disk.
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, body_limit)
    app.state.service = service
    app.state.settings = settings
    app.state.metrics = metrics

    @app.middleware("http")
    async def observe(request: Request, call_next):
        start = time.perf_counter()
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        request.state.log = {}
        wait = limiter.check(request.client.host if request.client else "unknown") \
            if limiter and request.method == "POST" and request.url.path == "/predict" else 0
        if wait:
            response: Response = _error(429, "rate_limited",
                                        f"more than {settings.rate_limit_per_minute} requests a minute from your "
                                        f"address; retry in {math.ceil(wait)} s", {"retry-after": str(math.ceil(wait))})
            label = "/predict"  # refused before routing, so there is no route to read
        else:
            response = await call_next(request)
            # Label by route template, never the raw path, so unknown URLs cannot explode cardinality.
            route = request.scope.get("route")
            label = "/ui" if request.url.path.startswith("/ui") else getattr(route, "path", None) or "unmatched"
        elapsed = time.perf_counter() - start
        metrics.requests.labels(route=label, method=request.method, status=str(response.status_code)).inc()
        metrics.latency.labels(route=label).observe(elapsed)
        response.headers["x-request-id"] = rid
        if not label.startswith("/ui") and label != "/metrics":
            access_log.info("request", extra={"fields": {
                "request_id": rid, "method": request.method, "route": label, "status": response.status_code,
                "latency_ms": round(elapsed * 1000, 2), **request.state.log}})
        return response

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        missing = [e for e in exc.errors() if e.get("type") == "missing" and "file" in e.get("loc", ())]
        if missing:
            return _error(400, "missing_file",
                          "send the image as multipart/form-data in the field 'file' "
                          "(e.g. curl -F file=@photo.jpg http://host/predict)")
        return _error(400, "bad_request", "; ".join(str(e.get("msg")) for e in exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if isinstance(exc, BodyTooLarge):
            return _error(413, "upload_too_large", f"upload exceeds the limit of {settings.max_upload_bytes:,} "
                          "bytes", {"connection": "close"})  # close: the rest of the body is never read
        if isinstance(exc, BodyTimeout):
            return _error(408, "body_timeout", str(exc.detail), {"connection": "close"})
        # Keep the exception's headers: a 405 must say which methods are allowed (RFC 9110).
        return _error(exc.status_code, "http_error", str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):  # pragma: no cover - last line of defence
        log.exception("unhandled error on %s", request.url.path)
        return _error(500, "internal_error", "unexpected server error; it has been logged")

    @app.post("/predict", response_model=PredictionOut, responses=ERRORS, tags=["predict"],
              summary="Emotion of every face in a photo")
    async def predict(request: Request, file: UploadFile = File(..., description="JPEG, PNG, WebP, BMP or GIF")):
        """Upload a photo (multipart field `file`). Answers the most prominent face's emotion and
        confidence, plus every face with its box. No face: 422 `no_face`."""
        svc: EmotionService | None = request.app.state.service
        if svc is None:
            return _error(503, "model_not_loaded", "no model is loaded yet; see /ready")
        data = await file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            return _error(413, "upload_too_large", f"upload exceeds the limit of {settings.max_upload_bytes:,} bytes")
        try:
            rgb = await run_in_threadpool(decode_image, data, settings.max_pixels)
        except ImageError as e:
            request.state.log["error"] = e.code
            return _error(e.status, e.code, str(e))
        analysis = await run_in_threadpool(svc.analyze, rgb)
        metrics.record_analysis(analysis, "api")
        request.state.log |= {"faces": len(analysis.faces), "emotions": [f.emotion for f in analysis.faces],
                              "model_version": svc.predictor.version}
        if not analysis.faces:
            return _error(422, "no_face", "no face was found in the image; try a clearer, front-facing photo")
        return analysis_json(analysis, svc)

    @app.get("/health", tags=["ops"], summary="Liveness")
    async def health():
        return {"status": "ok"}

    @app.get("/ready", tags=["ops"], summary="Readiness: a model is loaded", responses={503: {"model": ErrorOut}})
    async def ready(request: Request):
        svc = request.app.state.service
        if svc is None:
            return _error(503, "model_not_loaded", f"model {settings.model} is not loaded")
        return {"status": "ready", "model": {"name": svc.predictor.name, "version": svc.predictor.version}}

    @app.get("/model", tags=["ops"], summary="The served model: name, version, labels, metrics",
             responses={503: {"model": ErrorOut}})
    async def model_info(request: Request):
        svc = request.app.state.service
        if svc is None:
            return _error(503, "model_not_loaded", f"model {settings.model} is not loaded")
        meta = svc.predictor.meta
        return {"name": svc.predictor.name, "version": svc.predictor.version, "labels": svc.predictor.labels,
                "arch": meta.get("arch"), "input_size": svc.predictor.input_size,
                "metrics": {k: v for k, v in meta.get("metrics", {}).items() if isinstance(v, int | float)},
                "created": meta.get("created"), "code_version": meta.get("code_version")}

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics", response_class=Response)
    async def prometheus_metrics():
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/reload", tags=["ops"], summary="Load the registry's current production model",
              responses={400: {"model": ErrorOut, "description": "invalid query parameter"},
                         401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 409: {"model": ErrorOut}})
    async def admin_reload(request: Request, force: bool = False):
        """Requires `Authorization: Bearer <FER_ADMIN_TOKEN>`. Disabled (403) when no token is set."""
        if not settings.admin_token:
            return _error(403, "admin_disabled", "set FER_ADMIN_TOKEN to enable admin endpoints")
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
        if not hmac.compare_digest(token.encode(), settings.admin_token.encode()):
            return _error(401, "unauthorized", "missing or wrong bearer token", {"www-authenticate": "Bearer"})
        try:
            return await reload_model(force=force)
        except ModelRefused as e:
            return _error(409, "model_refused", f"{e}; the previous model keeps serving")

    if settings.ui:
        _mount_ui(app)

    return app


def _mount_ui(app: FastAPI) -> None:
    # Gradio and huggingface_hub start version-check/telemetry threads unless told not to.
    for var, value in (("GRADIO_ANALYTICS_ENABLED", "False"), ("HF_HUB_OFFLINE", "1"),
                       ("HF_HUB_DISABLE_TELEMETRY", "1")):
        os.environ.setdefault(var, value)
    import gradio as gr

    from fer.ui import build_ui

    @app.get("/", include_in_schema=False)
    async def root():
        return RedirectResponse("/ui/")

    # Mounted at a sub-path, declared last: a mount at "/" would shadow the API routes.
    gr.mount_gradio_app(app, build_ui(lambda: app.state.service, app.state.metrics), path="/ui",
                        theme=gr.themes.Soft(), max_file_size=app.state.settings.max_upload_bytes)


def serve(settings: ServeSettings | None = None) -> None:
    """Run the app with uvicorn (`python app.py`, `fer serve`)."""
    import uvicorn

    from fer.config import setup_logging
    from fer.metrics import MULTIPROC_ENV

    settings = settings or ServeSettings()
    setup_logging(settings.log_level, settings.log_format)
    # log_config=None: uvicorn's loggers go through ours (JSON lines); its own access log would
    # duplicate fer.access, which carries more (request id, faces, emotions, model version).
    common = {"host": settings.host, "port": settings.port, "log_level": settings.log_level.lower(),
              "log_config": None, "access_log": False}
    if settings.workers > 1:
        # Workers share metrics through files (prometheus_client multiprocess mode). The variable
        # must be set before a worker imports prometheus_client, so here, before they start; a
        # leftover directory from an earlier run is emptied, or its counts would carry over.
        import tempfile
        from pathlib import Path

        mp_dir = Path(os.environ.get(MULTIPROC_ENV) or tempfile.mkdtemp(prefix="fer-metrics-"))
        mp_dir.mkdir(parents=True, exist_ok=True)
        for stale in mp_dir.glob("*.db"):
            stale.unlink()
        os.environ[MULTIPROC_ENV] = str(mp_dir)
        # Several workers need an import string; each worker builds its own app from the env.
        # app_dir: app.py's folder, so `fer serve --workers 2` works from any directory.
        uvicorn.run("app:app", workers=settings.workers, app_dir=str(Path(__file__).resolve().parent.parent),
                    **common)
    else:
        uvicorn.run(create_app(settings), **common)
