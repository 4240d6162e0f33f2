"""Response schemas of the HTTP API, built from the inference result (`fer.inference.FaceResult`)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from fer.inference import Analysis, EmotionService, FaceResult


class ErrorOut(BaseModel):
    error: str = Field(description="machine-readable code")
    detail: str = Field(description="what went wrong and what to do")


class ModelRef(BaseModel):
    name: str
    version: str


class PredictionOut(BaseModel):
    emotion: str = Field(description="emotion of the most prominent (largest) face")
    confidence: float = Field(description="its probability")
    faces: list[FaceResult] = Field(description="every face found, largest first")
    face_count: int
    whole_image: bool = Field(description="no face was detected; the small image was classified as a face crop")
    image: dict[str, int] = Field(description="width and height after EXIF orientation")
    rotation: int = Field(
        0,
        description="degrees the photo was turned clockwise to find faces (a sideways photo without an EXIF "
        "orientation tag); boxes and image size refer to the turned photo",
    )
    model: ModelRef
    timings_ms: dict[str, float]
    prediction_id: str | None = Field(
        None, description="refer to this answer in POST /feedback (only when the deployment collects feedback)"
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "emotion": "happy",
                    "confidence": 0.91,
                    "face_count": 1,
                    "whole_image": False,
                    "faces": [
                        {
                            "box": {"x": 178, "y": 63, "w": 90, "h": 113},
                            "emotion": "happy",
                            "confidence": 0.91,
                            "probabilities": {
                                "angry": 0.01,
                                "disgust": 0.0,
                                "fear": 0.02,
                                "happy": 0.91,
                                "sad": 0.01,
                                "surprise": 0.02,
                                "neutral": 0.03,
                            },
                            "detection_score": 0.93,
                        }
                    ],
                    "image": {"width": 512, "height": 512},
                    "model": {"name": "fer-resnet18", "version": "2"},
                    "timings_ms": {"detect": 16.0, "inference": 2.1},
                }
            ]
        }
    }

    @classmethod
    def from_analysis(cls, a: Analysis, service: EmotionService) -> PredictionOut:
        p = a.primary
        return cls(
            emotion=p.emotion,
            confidence=p.confidence,
            faces=a.faces,
            face_count=len(a.faces),
            whole_image=a.is_crop,
            image={"width": a.width, "height": a.height},
            rotation=a.rotation,
            model=ModelRef(name=service.predictor.name, version=service.predictor.version),
            timings_ms={"detect": round(a.detect_s * 1000, 2), "inference": round(a.infer_s * 1000, 2)},
        )


class ReadyOut(BaseModel):
    status: str
    model: ModelRef


class ModelInfoOut(BaseModel):
    name: str
    version: str
    labels: list[str]
    arch: str | None
    input_size: int
    metrics: dict[str, int | float]
    created: str | None
    code_version: str | None


class ShadowIn(BaseModel):
    model: str = Field(
        min_length=3, max_length=200, pattern=r"^[^@\s]+@[^@\s]+$", examples=["fer-resnet18@1"],
        description="the candidate to shadow, `name@version` or `name@alias`",
    )  # fmt: skip
    share: float | None = Field(None, ge=0, le=1, description="share of answered requests it sees (default: unchanged)")


class ShadowOut(BaseModel):
    status: str = Field(description="shadowing or off")
    model: ModelRef | None
    share: float


class ReloadOut(BaseModel):
    status: str = Field(description="reloaded or unchanged")
    model: ModelRef


def errors(*statuses: int) -> dict[int, dict]:
    """OpenAPI `responses` for these error statuses, all answered as `ErrorOut`."""
    return {s: {"model": ErrorOut, "description": ERROR_DESCRIPTIONS[s]} for s in statuses}


ERROR_DESCRIPTIONS = {
    400: "empty upload, missing `file` field, corrupt image, or an invalid parameter",
    401: "missing or wrong bearer token",
    403: "disabled on this deployment (admin without FER_ADMIN_TOKEN, feedback without FER_FEEDBACK_DIR)",
    404: "no such recent answer (prediction_id unknown or too old)",
    409: "the new model was refused; the previous one keeps serving",
    413: "upload or image too large",
    415: "not an image, or an unsupported format",
    422: "no face found in the image",
    503: "no model loaded",
    507: "the feedback store is full (export it)",
}
