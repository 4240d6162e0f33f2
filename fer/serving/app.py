"""`create_app`: wires settings, metrics, the model holder, middleware, routers and the UI.

`app.py` only calls it. The Gradio UI is mounted at `/ui` and calls the same `EmotionService` as
`POST /predict`. A new route group is one module under `fer/serving/routes/` included here.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.formparsers import MultiPartParser

from fer.config import Settings
from fer.guards import UploadGuard
from fer.inference import EmotionService
from fer.metrics import Metrics
from fer.serving.errors import install_error_handlers
from fer.serving.holder import ModelHolder
from fer.serving.observe import install_observer
from fer.serving.routes import admin, batch, feedback, ops, predict, video
from fer.serving.routes.docs import install_docs

MULTIPART_ENVELOPE = 64 * 1024  # the multipart framing on top of the file itself


def create_app(settings: Settings | None = None, service: EmotionService | None = None) -> FastAPI:
    """Build the app. `service` injects a ready model (tests); otherwise the lifespan loads one."""
    settings = settings or Settings()
    metrics = Metrics(settings.metrics_multiproc_dir)
    holder = ModelHolder(settings, metrics, service)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await holder.start()
        yield
        await holder.stop()
        metrics.close()

    app = FastAPI(
        title="fer: facial emotion recognition",
        description="Detects every face in a photo and classifies its emotion (angry, disgust, fear, happy, "
        "sad, surprise, neutral) with a ResNet-18 trained on FER-2013. The web UI is at /ui.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's pages load their assets from a CDN; routes/docs.py serves them offline
        redoc_url=None,
    )
    app.state.settings, app.state.metrics, app.state.holder = settings, metrics, holder
    app.state.feedback, app.state.answers = _feedback(settings)
    # Upload limits as users see them: one per route that takes more than one photo's worth.
    route_limits = {"/predict/batch": settings.batch_max_bytes, "/predict/video": settings.video_max_bytes}
    body_limit = settings.max_upload_bytes + MULTIPART_ENVELOPE
    # Added before the observer below, so it runs inside it: its 408s are logged and counted.
    app.add_middleware(
        UploadGuard,
        max_bytes=body_limit,
        timeout=settings.body_timeout,
        per_path={path: limit + MULTIPART_ENVELOPE for path, limit in route_limits.items()},
    )
    if settings.cors_origins:  # closed unless origins are configured: no CORS headers at all
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["content-type", "authorization", "x-request-id"],
            expose_headers=["x-request-id"],
            max_age=600,
        )
    # Starlette spools multipart files over 1 MiB to a temporary file on disk; UploadGuard bounds
    # bodies to body_limit, so keep them in memory: an upload is never written to disk.
    MultiPartParser.spool_max_size = max(
        MultiPartParser.spool_max_size, body_limit, *(limit + MULTIPART_ENVELOPE for limit in route_limits.values())
    )
    install_observer(app, settings, metrics)
    install_error_handlers(app, settings.max_upload_bytes, route_limits)
    for router in (predict.router, batch.router, video.router, feedback.router, ops.router, admin.router):
        app.include_router(router)
    install_docs(app)
    if settings.ui:
        _mount_ui(app, holder, metrics, settings)
    return app


def _feedback(settings: Settings):
    """The feedback store and the window of recent answers, when the deployment collects feedback."""
    if not settings.feedback_dir:
        return None, None
    from fer.feedback import FeedbackStore, RecentAnswers

    store = FeedbackStore(settings.feedback_dir, settings.feedback_max_records, settings.feedback_retention_days)
    store.prune()
    return store, RecentAnswers(settings.feedback_window_s, settings.feedback_window_max)


def _mount_ui(app: FastAPI, holder: ModelHolder, metrics: Metrics, settings: Settings) -> None:
    # Gradio and huggingface_hub start version-check/telemetry threads unless told not to; they
    # read only these variables, so they are set for them here, before the import.
    for var, value in (
        ("GRADIO_ANALYTICS_ENABLED", "False"),
        ("HF_HUB_OFFLINE", "1"),
        ("HF_HUB_DISABLE_TELEMETRY", "1"),
    ):
        os.environ.setdefault(var, value)
    import gradio as gr

    from fer.ui import build_ui

    @app.get("/", include_in_schema=False)
    async def root():
        return RedirectResponse("/ui/")

    # Mounted at a sub-path, declared last: a mount at "/" would shadow the API routes.
    gr.mount_gradio_app(
        app,
        build_ui(
            lambda: holder.service,
            metrics,
            settings.video_max_seconds,
            (app.state.feedback, app.state.answers) if app.state.feedback is not None else None,
        ),
        path="/ui",
        root_path="/ui",
        theme=gr.themes.Soft(),
        max_file_size=settings.max_upload_bytes,
    )
