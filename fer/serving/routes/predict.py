"""`POST /predict`: one photo in, every face's emotion out."""

from __future__ import annotations

import os
import random
import time

from fastapi import APIRouter, BackgroundTasks, File, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from fer.images import ImageError, decode_photo
from fer.serving.deps import AppMetrics, AppSettings, Service
from fer.serving.errors import ApiError
from fer.serving.schemas import PredictionOut, errors

router = APIRouter(tags=["predict"])


class InFlight:
    """Photos being decoded and analysed in this process now (changed on the event loop only)."""

    photos = 0


@router.post(
    "/predict",
    response_model=PredictionOut,
    responses=errors(400, 413, 415, 422, 503),
    summary="Emotion of every face in a photo",
)
async def predict(
    request: Request,
    svc: Service,
    settings: AppSettings,
    metrics: AppMetrics,
    background: BackgroundTasks,
    file: UploadFile = File(..., description="JPEG, PNG, WebP, BMP or GIF"),
) -> PredictionOut:
    """Upload a photo (multipart field `file`). Answers the most prominent face's emotion and
    confidence, plus every face with its box. No face: 422 `no_face`."""
    prediction, log_fields = await predict_upload(
        file, svc, settings, metrics, request.app.state.answers, shadow_after(request, background)
    )
    request.state.log |= log_fields
    if isinstance(prediction, ApiError):
        raise prediction
    return prediction


def shadow_after(request: Request, background: BackgroundTasks):
    """A hook that hands a share of answered faces to the shadow model, after the response.

    The shadow must never slow production down, so it only takes spare cores: when this process
    is already working on `shadow_max_inflight` other photos (default: all cores but one) as the
    answer is ready, or again when its turn comes, it skips the image and counts the skip. What
    it does run, it runs on one thread at the lowest CPU priority (fer.serving.shadow). Under
    saturation the candidate then costs nothing; its sample shrinks.
    """
    state = request.app.state
    holder, metrics = state.holder, state.metrics
    shadow = holder.shadow
    if shadow is None or random.random() >= holder.shadow_share:
        return None
    limit = state.settings.shadow_max_inflight or max(1, (os.cpu_count() or 1) - 1)

    def busy() -> bool:
        if InFlight.photos >= limit:
            metrics.shadow_skipped.inc()
            return True
        return False

    def compare(crops, production: list[str]) -> None:
        if busy():
            return
        t = time.perf_counter()
        probs = shadow.predictor.predict_proba(crops)
        answers = [shadow.predictor.labels[i] for i in probs.argmax(1)]
        metrics.record_shadow(answers, production, probs.max(1), time.perf_counter() - t)

    def after(analysis) -> None:
        if busy():  # decided now, so a skipped image costs no task at all
            return
        crops, production = analysis.crops, [f.emotion for f in analysis.faces]

        async def hand_off() -> None:  # after the response: to the shadow's low-priority thread
            if not holder.shadow_worker.submit(compare, crops, production):
                metrics.shadow_skipped.inc()  # its queue is full: the shadow is behind, drop

        background.add_task(hand_off)

    return after


async def predict_upload(
    file: UploadFile, svc, settings, metrics, answers=None, after=None
) -> tuple[PredictionOut | ApiError, dict]:
    """One uploaded image to its prediction, or to the ApiError it is refused with.

    Shared by `/predict` (which raises the error) and `/predict/batch` (which reports it for
    that file and goes on). Also returns the fields for the request's access-log line.
    """
    data = await file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        return ApiError(413, "upload_too_large", f"upload exceeds the limit of {settings.max_upload_bytes:,} bytes"), {}
    InFlight.photos += 1
    try:
        photo = await run_in_threadpool(decode_photo, data, settings.max_pixels)
        analysis = (await run_in_threadpool(svc.analyze, photo.rgb, True, photo.pixel_scale)).scaled(photo)
    except ImageError as e:
        return ApiError(e.status, e.code, str(e)), {"error": e.code}
    finally:
        InFlight.photos -= 1
    metrics.record_analysis(analysis, "api")
    fields = {
        "faces": len(analysis.faces),
        "emotions": [f.emotion for f in analysis.faces],
        "model_version": svc.predictor.version,
    }
    if not analysis.faces:
        return ApiError(422, "no_face", "no face was found in the image; try a clearer, front-facing photo"), fields
    out = PredictionOut.from_analysis(analysis, svc)
    if after is not None:
        after(analysis)
    if answers is not None:  # feedback is on: keep what the model saw, briefly, in memory
        out.prediction_id = answers.put(
            analysis.crops, [f.emotion for f in analysis.faces], f"{svc.predictor.name}@{svc.predictor.version}"
        )
        fields["prediction_id"] = out.prediction_id
    return out, fields
