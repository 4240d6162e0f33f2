"""Typed dependencies of the routes: the settings, the metrics, and the service (or a 503)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from fer.config import Settings
from fer.inference import EmotionService
from fer.metrics import Metrics
from fer.serving.errors import ApiError
from fer.serving.holder import ModelHolder


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_holder(request: Request) -> ModelHolder:
    return request.app.state.holder


def get_service(request: Request) -> EmotionService:
    """The service being served; 503 `model_not_loaded` while there is none."""
    holder: ModelHolder = request.app.state.holder
    if holder.service is None:
        raise ApiError(503, "model_not_loaded", f"model {holder.settings.model} is not loaded yet; see /ready")
    return holder.service


AppSettings = Annotated[Settings, Depends(get_settings)]
AppMetrics = Annotated[Metrics, Depends(get_metrics)]
Holder = Annotated[ModelHolder, Depends(get_holder)]
Service = Annotated[EmotionService, Depends(get_service)]
