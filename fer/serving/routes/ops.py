"""Operations: liveness, readiness, the served model, Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from fer.serving.deps import AppMetrics, Service
from fer.serving.schemas import ModelInfoOut, ModelRef, ReadyOut, errors

router = APIRouter(tags=["ops"])


@router.get("/health", summary="Liveness")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="Readiness: a model is loaded", response_model=ReadyOut, responses=errors(503))
async def ready(svc: Service) -> ReadyOut:
    return ReadyOut(status="ready", model=ModelRef(name=svc.predictor.name, version=svc.predictor.version))


@router.get(
    "/model",
    summary="The served model: name, version, labels, metrics",
    response_model=ModelInfoOut,
    responses=errors(503),
)
async def model_info(svc: Service) -> ModelInfoOut:
    p, meta = svc.predictor, svc.predictor.meta
    return ModelInfoOut(
        name=p.name,
        version=p.version,
        labels=p.labels,
        arch=meta.arch,
        input_size=p.input_size,
        metrics=meta.numeric_metrics,
        created=meta.created,
        code_version=meta.code_version,
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus_metrics(metrics: AppMetrics) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
