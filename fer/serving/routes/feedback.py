"""`POST /feedback`: a user confirms or corrects the emotion of one face of a recent answer."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from fer.serving.deps import AppMetrics
from fer.serving.errors import ApiError
from fer.serving.schemas import errors

router = APIRouter(tags=["feedback"])
Emotion = Literal["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


class FeedbackIn(BaseModel):
    prediction_id: str = Field(min_length=1, max_length=64, description="from the POST /predict answer")
    face: int = Field(0, ge=0, description="which face of that answer (0: the most prominent)")
    label: Emotion = Field(description="the emotion the face really shows")

    model_config = {"json_schema_extra": {"examples": [{"prediction_id": "0f3c...", "face": 0, "label": "sad"}]}}


class FeedbackOut(BaseModel):
    stored: bool
    agreed: bool = Field(description="the model's answer was the user's label")
    predicted: str
    label: str


@router.post("/feedback", response_model=FeedbackOut, responses=errors(400, 403, 404, 507),
             summary="Confirm or correct the emotion of a face")  # fmt: skip
async def feedback(request: Request, body: FeedbackIn, metrics: AppMetrics) -> FeedbackOut:
    """Stores the face's aligned 48x48 crop, the model's answer and your label (never the photo),
    when the deployment collects feedback (`FER_FEEDBACK_DIR`); 403 otherwise. An answer can get
    feedback for `FER_FEEDBACK_WINDOW_S` seconds (600) after it was given."""
    from fer.feedback import FeedbackError

    store, answers = request.app.state.feedback, request.app.state.answers
    if store is None:
        raise ApiError(403, "feedback_disabled", "this deployment does not collect feedback (FER_FEEDBACK_DIR)")
    answer = answers.get(body.prediction_id)
    if answer is None:
        raise ApiError(404, "unknown_prediction", f"no recent answer {body.prediction_id!r}: feedback must refer "
                       f"to a prediction_id from the last {answers.window_s:g} s")  # fmt: skip
    if body.face >= len(answer.emotions):
        raise ApiError(400, "bad_face", f"that answer has {len(answer.emotions)} face(s); face is 0-based")
    try:
        record = await run_in_threadpool(store.add, answer, body.face, body.label, body.prediction_id)
    except FeedbackError as e:
        raise ApiError(e.status, e.code, str(e)) from None
    metrics.feedback.labels(agreed=str(record["agreed"]).lower()).inc()
    request.state.log |= {"feedback": body.label, "agreed": record["agreed"]}
    return FeedbackOut(stored=True, agreed=record["agreed"], predicted=record["predicted"], label=body.label)
