"""`POST /predict/video` over HTTP with the real model: tracks and frames, and every refusal a 4xx."""

from __future__ import annotations

import videos
from fastapi.testclient import TestClient

from fer.config import Settings
from fer.serving.app import create_app


def upload(client, data: bytes, name="clip.mp4", **params):
    return client.post("/predict/video", files={"file": (name, data, "video/mp4")}, params=params)


def test_tracks_and_frames_of_a_cut(api_client, tmp_path):
    r = upload(api_client, videos.cut(tmp_path / "cut.mp4").read_bytes())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["frames_analyzed"] == 30 and body["model"]["name"] == "fer-resnet18"
    assert next((t["id"], t["frames_seen"], t["dominant_emotion"]) for t in body["tracks"]) == (1, 15, "happy")
    assert len(body["tracks"]) == 2 and len(body["frames"]) == 30
    assert set(body["frames"][0]["probabilities"]) == {
        "angry",
        "disgust",
        "fear",
        "happy",
        "sad",
        "surprise",
        "neutral",
    }
    assert upload(api_client, videos.cut(tmp_path / "c2.mp4").read_bytes(), every=3).json()["frames_analyzed"] == 10


def test_empty_corrupt_and_non_video_uploads_are_4xx(api_client, tmp_path):
    assert upload(api_client, b"").json()["error"] == "empty_upload"
    truncated = videos.pan(tmp_path / "pan.mp4").read_bytes()[:300]
    for data in (b"just some text, not a video", truncated, (videos.EXAMPLES / "astronaut.jpg").read_bytes()[:500]):
        r = upload(api_client, data)
        assert 400 <= r.status_code < 500 and r.json()["error"] in {"unsupported_video"}, r.text
    assert api_client.post("/predict/video", params={"every": 0}, files={"file": ("a.mp4", b"x")}).status_code == 400


def test_a_long_video_gets_a_clear_413(shipped_service, tmp_path):
    with TestClient(create_app(Settings(ui=False, video_max_seconds=2), service=shipped_service)) as c:
        r = upload(c, videos.pan(tmp_path / "pan.mp4").read_bytes())  # 3 s
        assert r.status_code == 413 and r.json()["error"] == "video_too_long" and "limit is 2 s" in r.json()["detail"]
