"""`POST /predict/batch`: several photos in one request, one result or one error per photo."""

from __future__ import annotations

from fastapi import APIRouter, File, Request, UploadFile
from pydantic import BaseModel, Field

from fer.serving.deps import AppMetrics, AppSettings, Service
from fer.serving.errors import ApiError
from fer.serving.routes.predict import predict_upload
from fer.serving.schemas import ErrorOut, PredictionOut, errors

router = APIRouter(tags=["predict"])


class BatchItem(BaseModel):
    file: str | None = Field(description="the uploaded file's name")
    status: int = Field(description="what POST /predict would answer for this file alone: 200, 4xx")
    result: PredictionOut | None = Field(None, description="the prediction (status 200)")
    error: ErrorOut | None = Field(None, description="why there is none (status 4xx), as /predict says it")


class BatchOut(BaseModel):
    results: list[BatchItem] = Field(description="one entry per uploaded file, in upload order")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "results": [
                        {
                            "file": "a.jpg",
                            "status": 200,
                            "result": PredictionOut.model_config["json_schema_extra"]["examples"][0],
                        },
                        {
                            "file": "b.txt",
                            "status": 415,
                            "error": {"error": "unsupported_media_type", "detail": "the upload is not an image"},
                        },
                    ]
                }
            ]
        }
    }


@router.post(
    "/predict/batch",
    response_model=BatchOut,
    responses=errors(400, 413, 503),
    summary="Emotions of every face in several photos",
)
async def predict_batch(
    request: Request,
    svc: Service,
    settings: AppSettings,
    metrics: AppMetrics,
    files: list[UploadFile] = File(..., description="the photos: repeat the field"),
) -> BatchOut:
    """Upload several photos as the repeated multipart field `files` (at most `FER_BATCH_MAX_FILES`,
    32, and `FER_BATCH_MAX_BYTES`, 50 MB, in all). Each gets what `POST /predict` would answer
    for it alone: a prediction, or its error code; one bad file never fails the others."""
    if len(files) > settings.batch_max_files:
        raise ApiError(
            413,
            "too_many_files",
            f"{len(files)} files; one request takes at most {settings.batch_max_files} (FER_BATCH_MAX_FILES)",
        )
    results, faces = [], 0
    for f in files:
        prediction, fields = await predict_upload(f, svc, settings, metrics, request.app.state.answers)
        faces += fields.get("faces", 0)
        if isinstance(prediction, ApiError):
            results.append(
                BatchItem(
                    file=f.filename,
                    status=prediction.status,
                    error=ErrorOut(error=prediction.code, detail=prediction.detail),
                )
            )
        else:
            results.append(BatchItem(file=f.filename, status=200, result=prediction))
    request.state.log |= {"files": len(files), "faces": faces, "model_version": svc.predictor.version}
    return BatchOut(results=results)
