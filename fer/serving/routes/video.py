"""`POST /predict/video`: a short video in, its faces tracked over time and their emotions smoothed."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fastapi import APIRouter, File, Query, Request, UploadFile
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from fer.serving.deps import AppSettings, Service
from fer.serving.errors import ApiError
from fer.serving.schemas import ModelRef, errors

router = APIRouter(tags=["predict"])


class TrackOut(BaseModel):
    id: int = Field(description="stable while the face stays in view")
    frames_seen: int
    first_frame: int
    last_frame: int
    start_s: float
    end_s: float
    dominant_emotion: str = Field(description="the emotion with the largest time share")
    emotion_share: dict[str, float] = Field(description="share of the track's frames with each smoothed emotion")
    mean_probabilities: dict[str, float]


class FrameFaceOut(BaseModel):
    frame: int
    time_s: float
    track: int
    x: int
    y: int
    w: int
    h: int
    emotion: str = Field(description="this frame's own answer")
    confidence: float
    smoothed_emotion: str = Field(description="the track's answer, smoothed over time")
    smoothed_confidence: float
    probabilities: dict[str, float] = Field(description="the track's smoothed probabilities")


class VideoOut(BaseModel):
    fps: float
    frames_in_file: int
    frames_analyzed: int
    duration_s: float
    tracks: list[TrackOut]
    frames: list[FrameFaceOut] = Field(description="one entry per face per analysed frame")
    model: ModelRef


@router.post(
    "/predict/video",
    response_model=VideoOut,
    responses=errors(400, 413, 415, 503),
    summary="Faces tracked through a short video, their emotions smoothed",
)
async def predict_video(
    request: Request,
    svc: Service,
    settings: AppSettings,
    file: UploadFile = File(..., description="MP4, AVI, WebM or MOV"),
    every: int = Query(1, ge=1, le=1000, description="analyse every N-th frame"),
    smoothing: float = Query(0.4, gt=0, le=1, description="weight of each new frame (1 = no smoothing)"),
) -> VideoOut:
    """Upload a video (multipart field `file`; at most `FER_VIDEO_MAX_BYTES`, 50 MB, and
    `FER_VIDEO_MAX_SECONDS`, 60 s: longer ones get 413 `video_too_long`)."""
    from fer.video import VideoError, process_video

    data = await file.read(settings.video_max_bytes + 1)
    if not data:
        raise ApiError(400, "empty_upload", "the uploaded file is empty")
    if len(data) > settings.video_max_bytes:
        raise ApiError(413, "upload_too_large", f"upload exceeds the limit of {settings.video_max_bytes:,} bytes")
    # OpenCV decodes from a path: the upload lives in a private temp file only while it is read.
    fd, name = tempfile.mkstemp(prefix="fer-video-", suffix=Path(file.filename or "").suffix[:8])
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        result = await run_in_threadpool(
            process_video, svc, Path(name), every, None, smoothing, None, settings.video_max_seconds
        )
    except VideoError as e:
        request.state.log["error"] = e.code
        raise ApiError(e.status, e.code, str(e)) from None
    finally:
        os.unlink(name)
    request.state.log |= {
        "frames": result.frames_analyzed,
        "tracks": len(result.tracks),
        "model_version": svc.predictor.version,
    }
    return VideoOut(
        fps=result.fps,
        frames_in_file=result.frames_in_file,
        frames_analyzed=result.frames_analyzed,
        duration_s=result.duration_s,
        tracks=result.tracks,
        frames=result.frames,
        model=ModelRef(name=svc.predictor.name, version=svc.predictor.version),
    )
