"""The model holder: resolve the configured model, load and smoke-test it, swap it in, poll.

Testable without HTTP: the app keeps one `ModelHolder` on `app.state` and routes read
`holder.service`. A model that fails to load or its smoke test is refused (`ModelRefused`), counted,
and the model already serving keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from fer.config import Settings
from fer.inference import EmotionService
from fer.metrics import Metrics
from fer.serving.shadow import ShadowWorker

log = logging.getLogger(__name__)


class ModelRefused(RuntimeError):
    """A model that failed to load or to pass the smoke prediction."""


def resolve_model(settings: Settings):
    """The registry version `settings.model` names (verified against its checksums)."""
    from fer.registry import open_registry

    return open_registry(settings=settings).resolve(settings.model)


def load_service(settings: Settings, mv=None) -> EmotionService:
    """Build the service for the configured registry reference (or a resolved version), smoke-tested.

    Raises:
        ModelRefused: the model cannot be loaded or gives no sane prediction.
    """
    try:
        mv = mv or resolve_model(settings)
        svc = EmotionService.from_artifact(
            mv.path,
            name=mv.name,
            version=mv.version,
            threads=settings.model_threads,
            score_threshold=settings.detector_threshold,
            max_faces=settings.max_faces,
            min_face=settings.min_face_px,
            batch_max_wait=settings.batch_max_wait_ms / 1000,
            batch_max_size=settings.batch_max_size,
        )
        # Smoke prediction: one grey crop must give a probability distribution over the labels.
        side = svc.predictor.input_size
        probs = svc.predictor.predict_proba(np.full((1, side, side), 128, dtype=np.uint8))
    except Exception as e:  # whatever breaks, the model is refused with the reason
        raise ModelRefused(f"model {settings.model} refused: {type(e).__name__}: {e}") from e
    if (
        probs.shape != (1, len(svc.predictor.labels))
        or not np.isfinite(probs).all()
        or abs(float(probs.sum()) - 1) > 1e-3
    ):
        svc.close()
        raise ModelRefused(f"model {mv.ref} refused: smoke prediction is not a probability distribution")
    return svc


class ModelHolder:
    """Owns the service being served and every change of it.

    Args:
        settings: which model (`settings.model`) from which registry, and how to run it.
        metrics: the app's collectors; model info, readiness and refusals are recorded here.
        service: a ready service to start with (tests); otherwise `start()` loads one.
    """

    def __init__(self, settings: Settings, metrics: Metrics, service: EmotionService | None = None):
        self.settings = settings
        self.metrics = metrics
        self.service = service
        self.shadow: EmotionService | None = None  # a candidate answering the same faces, unseen
        self.shadow_share = settings.shadow_share  # the share of answers it sees; admin can change it
        self.shadow_worker = ShadowWorker()  # where it runs: one low-priority thread
        self._lock = asyncio.Lock()
        self._poller: asyncio.Task | None = None

    @property
    def ref(self) -> str:
        """What is served, as `name@version`, or "nothing"."""
        p = self.service.predictor if self.service else None
        return f"{p.name}@{p.version}" if p else "nothing"

    async def reload(self, force: bool = False) -> dict[str, Any]:
        """Load the registry's current version and swap it in if it differs (or `force`).

        The swap is one reference assignment: requests in flight keep the service object they
        started with, new requests get the new one, none fails.

        Raises:
            ModelRefused: the new model cannot be resolved, loaded or smoke-tested.
        """
        async with self._lock:
            current = self.service
            try:
                mv = await run_in_threadpool(resolve_model, self.settings)
                if (
                    current is not None
                    and not force
                    and str(mv.version) == current.predictor.version
                    and mv.name == current.predictor.name
                ):
                    return {"status": "unchanged", "model": {"name": mv.name, "version": str(mv.version)}}
                new = await run_in_threadpool(load_service, self.settings, mv)
            except Exception as e:  # refused: counted, logged, and the old model stays
                self.metrics.model_load_failures.inc()
                log.error("model load refused (%s keeps serving): %s", self.ref, e)
                raise ModelRefused(str(e)) from e
            self.service = new
            if current is not None:
                current.close()  # its batcher finishes what is queued; later calls run unbatched
            p = new.predictor
            self.metrics.set_model(p.name, p.version)
            log.info("now serving %s@%s", p.name, p.version)
            return {"status": "reloaded", "model": {"name": p.name, "version": p.version}}

    async def start(self) -> None:
        """Load the model (unless one was given) and start polling the registry if configured.

        A model that cannot load does not stop the app: `/ready` answers 503 until one loads.
        """
        if self.service is None:
            try:
                await self.reload()
            except ModelRefused:
                self.metrics.model_ready.set(0)
        else:
            self.metrics.set_model(self.service.predictor.name, self.service.predictor.version)
        if self.settings.shadow_model:
            await self.load_shadow(self.settings.shadow_model)
        if self.settings.reload_interval > 0:
            self._poller = asyncio.create_task(self._poll())

    async def load_shadow(self, ref: str) -> None:
        """Serve `ref` in shadow at startup; a model that cannot load is refused (counted), none shadows."""
        try:
            await self.set_shadow(ref)
        except ModelRefused as e:
            log.error("shadow model refused: %s", e)

    async def set_shadow(self, ref: str, share: float | None = None) -> dict[str, Any]:
        """Load `ref` as the shadow (replacing any), optionally with a new share; what now shadows.

        Raises:
            ModelRefused: it cannot be resolved, loaded or smoke-tested; the old shadow stays.
        """
        async with self._lock:
            try:
                new = await run_in_threadpool(load_service, self.settings.model_copy(update={"model": ref}))
            except ModelRefused:
                self.metrics.model_load_failures.inc()
                raise
            old, self.shadow = self.shadow, new
            if share is not None:
                self.shadow_share = share
            self._retire_shadow(old)
            p = new.predictor
            self.metrics.shadow_info.labels(name=p.name, version=p.version).set(1)
            log.info("shadowing %s@%s (share %.0f%%)", p.name, p.version, self.shadow_share * 100)
            return self.shadow_state()

    async def clear_shadow(self) -> dict[str, Any]:
        """Stop shadowing (answers already handed to the old shadow still finish)."""
        async with self._lock:
            old, self.shadow = self.shadow, None
            self._retire_shadow(old)
            return self.shadow_state()

    def _retire_shadow(self, old: EmotionService | None) -> None:
        if old is not None:
            p = old.predictor
            self.metrics.shadow_info.labels(name=p.name, version=p.version).set(0)
            old.close()

    def shadow_state(self) -> dict[str, Any]:
        p = self.shadow.predictor if self.shadow else None
        model = {"name": p.name, "version": p.version} if p else None
        return {"status": "shadowing" if p else "off", "model": model, "share": self.shadow_share}

    async def stop(self) -> None:
        self.shadow_worker.close()
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_interval)
            try:
                await self.reload()
            except ModelRefused:
                pass  # already logged and counted
