"""Run the app with uvicorn (`python app.py`, `fer serve`), one process or several workers."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fer.config import Settings, setup_logging

APP_DIR = Path(__file__).resolve().parent.parent.parent  # where app.py lives


def serve(settings: Settings) -> None:
    """Serve `settings`' model on `settings.host:port` until interrupted."""
    import uvicorn

    setup_logging(settings.log_level, settings.log_format)
    # log_config=None: uvicorn's loggers go through ours (JSON lines); its own access log would
    # duplicate fer.access, which carries more (request id, faces, emotions, model version).
    common = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level.lower(),
        "log_config": None,
        "access_log": False,
    }
    if settings.workers == 1:
        from fer.serving.app import create_app

        uvicorn.run(create_app(settings), **common)
        return
    # Several workers need an import string and each builds its own app from the environment, so
    # these settings travel to them as FER_* variables. Workers share metrics through files
    # (prometheus_client multiprocess mode): the directory must be known before a worker imports
    # prometheus_client, and a leftover one is emptied or its counts would carry over.
    mp_dir = Path(settings.metrics_multiproc_dir or tempfile.mkdtemp(prefix="fer-metrics-"))
    mp_dir.mkdir(parents=True, exist_ok=True)
    for stale in mp_dir.glob("*.db"):
        stale.unlink()
    os.environ.update(settings.to_env())
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(mp_dir)
    # app_dir: app.py's folder, so `fer serve --workers 2` works from any directory.
    uvicorn.run(
        "app:app",
        workers=settings.workers,
        app_dir=str(APP_DIR),
        timeout_worker_healthcheck=settings.worker_healthcheck_timeout,
        **common,
    )
