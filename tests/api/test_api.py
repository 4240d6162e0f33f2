"""The REST API over HTTP (Starlette's test client) with the real shipped model and real photos."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from conftest import EXAMPLES, jpeg_bytes
from fastapi.testclient import TestClient
from PIL import Image

from fer.config import Settings
from fer.serving.app import create_app

LABELS = {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}


def post(client, data: bytes, name="photo.jpg", field="file", ctype="image/jpeg"):
    return client.post("/predict", files={field: (name, data, ctype)})


def encode(rgb: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **kw)
    return buf.getvalue()


def astronaut() -> np.ndarray:
    return np.asarray(Image.open(EXAMPLES / "astronaut.jpg").convert("RGB"))


def test_one_face_photo(api_client):
    r = post(api_client, (EXAMPLES / "astronaut.jpg").read_bytes())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["emotion"] in LABELS and 0 < body["confidence"] <= 1
    assert body["face_count"] == 1 and body["whole_image"] is False
    face = body["faces"][0]
    assert set(face["probabilities"]) == LABELS
    assert sum(face["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    assert face["emotion"] == body["emotion"] and face["confidence"] == body["confidence"]
    # Eileen Collins' face sits around x 180-270, y 60-180 in the 512x512 portrait.
    b = face["box"]
    assert 150 < b["x"] < 210 and 40 < b["y"] < 100 and 60 < b["w"] < 140
    assert body["model"]["name"] == "fer-resnet18" and body["model"]["version"]
    assert body["image"] == {"width": 512, "height": 512}


def test_smiling_portrait_is_happy(api_client):
    # A behavioural check of the real model: the astronaut portrait is an open smile.
    assert post(api_client, (EXAMPLES / "astronaut.jpg").read_bytes()).json()["emotion"] == "happy"


def test_group_photo_finds_every_face(api_client):
    body = post(api_client, (EXAMPLES / "group.jpg").read_bytes()).json()
    assert body["face_count"] == 3
    areas = [f["box"]["w"] * f["box"]["h"] for f in body["faces"]]
    assert areas == sorted(areas, reverse=True)  # most prominent first
    assert body["emotion"] == body["faces"][0]["emotion"]
    xs = sorted(f["box"]["x"] for f in body["faces"])
    assert xs[1] - xs[0] > 200 and xs[2] - xs[1] > 200  # three different people, left to right


def test_mirrored_face_gives_same_answer(api_client):
    img = astronaut()
    a = post(api_client, jpeg_bytes(img)).json()
    b = post(api_client, jpeg_bytes(img[:, ::-1].copy())).json()
    assert a["emotion"] == b["emotion"]
    assert abs(a["confidence"] - b["confidence"]) < 0.25


def test_exif_rotated_phone_photo(api_client):
    # A phone stores pixels sideways and says "rotate 90 CW" in EXIF (orientation 6).
    img = astronaut()[:, :400]  # non-square so the axes are distinguishable
    sideways = np.ascontiguousarray(np.rot90(img, k=1))  # stored rotated 90 CCW
    exif = Image.Exif()
    exif[0x0112] = 6
    body = post(api_client, jpeg_bytes(sideways, exif=exif.tobytes())).json()
    assert body["image"] == {"width": 400, "height": 512}  # upright after EXIF orientation
    assert body["face_count"] == 1
    upright = post(api_client, jpeg_bytes(img)).json()
    for k in ("x", "y", "w", "h"):
        assert abs(body["faces"][0]["box"][k] - upright["faces"][0]["box"][k]) <= 6


@pytest.mark.parametrize(("fmt", "kw"), [("PNG", {}), ("WEBP", {"quality": 90}), ("BMP", {}), ("GIF", {})])
def test_formats(api_client, fmt, kw):
    r = post(api_client, encode(astronaut(), fmt, **kw), name=f"x.{fmt.lower()}", ctype="application/octet-stream")
    assert r.status_code == 200, r.text
    assert r.json()["face_count"] == 1


def test_large_photo_is_downscaled_for_detection(api_client):
    big = np.asarray(Image.open(EXAMPLES / "grace_hopper.jpg").convert("RGB").resize((2560, 3000)))
    body = post(api_client, jpeg_bytes(big)).json()
    assert body["face_count"] == 1 and body["image"] == {"width": 2560, "height": 3000}
    assert body["faces"][0]["box"]["w"] > 600  # boxes mapped back to full-size pixels


def test_photo_without_face_is_422(api_client):
    from skimage import data

    r = post(api_client, jpeg_bytes(data.coffee()))
    assert r.status_code == 422
    assert r.json()["error"] == "no_face"


def test_face_crop_is_classified_as_is(api_client):
    face = Image.open(EXAMPLES / "astronaut.jpg").convert("L").crop((170, 50, 280, 190))
    for size in (48, 120):  # a FER-2013-sized crop, and a small crop the detector may not box
        r = post(api_client, encode(np.asarray(face.resize((size, size))), "PNG"), name="crop.png")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["face_count"] == 1
        if size == 48:
            assert body["whole_image"] is True
            assert body["faces"][0]["box"] == {"x": 0, "y": 0, "w": 48, "h": 48}


@pytest.mark.data
def test_fer2013_crops_match_evaluate(api_client, shipped_service, fer2013):
    # The API's answer on FER-2013 rows equals the evaluation path's (same model, same preprocessing).
    test = fer2013["test"]
    rows = [0, 1, 2, 3, 5, 8, 13, 21]
    expected = shipped_service.predictor.predict_proba(test.x[rows])
    labels = shipped_service.predictor.labels
    for i, row in enumerate(rows):
        body = post(api_client, encode(test.x[row], "PNG"), name="fer.png").json()
        assert body["whole_image"] is True and body["face_count"] == 1
        got = np.array([body["faces"][0]["probabilities"][lab] for lab in labels])
        np.testing.assert_allclose(got, expected[i], atol=1e-5)
        assert body["emotion"] == labels[int(expected[i].argmax())]


# --- errors ----------------------------------------------------------------------------------------


def test_not_an_image(api_client):
    r = post(api_client, b"%PDF-1.4 fake pdf", name="photo.jpg")
    assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type"
    r = post(api_client, b"hello, I am text", name="photo.png")
    assert r.status_code == 415


def test_empty_upload(api_client):
    r = post(api_client, b"")
    assert r.status_code == 400 and r.json()["error"] == "empty_upload"


def test_missing_field_and_wrong_body(api_client):
    r = post(api_client, (EXAMPLES / "astronaut.jpg").read_bytes(), field="image")
    assert r.status_code == 400 and "field 'file'" in r.json()["detail"]
    r = api_client.post("/predict", content=b"\xff\xd8raw body", headers={"content-type": "image/jpeg"})
    assert r.status_code == 400


def test_truncated_jpeg(api_client):
    data = (EXAMPLES / "astronaut.jpg").read_bytes()
    r = post(api_client, data[: len(data) // 3])
    assert r.status_code == 400 and r.json()["error"] == "invalid_image"


def _png_header_only(w: int, h: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    )


def test_decompression_bomb_refused(api_client):
    r = post(api_client, _png_header_only(30000, 30000), name="bomb.png")
    assert r.status_code == 413 and "900000000 pixels" in r.json()["detail"]
    r = post(api_client, _png_header_only(8000, 6000), name="big.png")  # over our 40 MP limit, under PIL's
    assert r.status_code == 413 and "48,000,000 pixels; the limit is 40,000,000" in r.json()["detail"]


def test_upload_too_large(tmp_path, shipped_service):
    app = create_app(Settings(max_upload_bytes=50_000, ui=False), service=shipped_service)
    with TestClient(app) as c:
        r = post(c, (EXAMPLES / "grace_hopper.jpg").read_bytes())  # ~80 KB
        assert r.status_code == 413 and r.json()["error"] == "upload_too_large"
        big = c.post("/predict", content=b"x" * 200_000, headers={"content-type": "multipart/form-data; boundary=x"})
        assert big.status_code == 413 and "exceeds the limit" in big.json()["detail"]
        assert 'fer_http_requests_total{method="POST",route="/predict",status="413"} 2.0' in c.get("/metrics").text
        assert post(c, jpeg_bytes(astronaut()[:200, 150:300].copy())).status_code == 200


def test_model_not_loaded_is_503(tmp_path):
    settings = Settings(registry_dir=str(tmp_path), model="no-such-model@production", ui=False)
    with TestClient(create_app(settings)) as c:
        r = post(c, (EXAMPLES / "astronaut.jpg").read_bytes())
        assert r.status_code == 503 and r.json()["error"] == "model_not_loaded"
        assert c.get("/ready").status_code == 503
        assert c.get("/health").json() == {"status": "ok"}
        assert "fer_model_ready 0.0" in c.get("/metrics").text


# --- ops routes ------------------------------------------------------------------------------------


def test_ready_health_model(api_client):
    assert api_client.get("/health").json() == {"status": "ok"}
    ready = api_client.get("/ready").json()
    assert ready["status"] == "ready" and ready["model"]["name"] == "fer-resnet18"
    info = api_client.get("/model").json()
    assert info["labels"] == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert info["metrics"]["test_acc"] >= 0.68


def test_metrics_contract(api_client):
    post(api_client, (EXAMPLES / "group.jpg").read_bytes())
    from skimage import data

    post(api_client, jpeg_bytes(data.coffee()))
    text = api_client.get("/metrics").text
    for name in (
        "fer_http_requests_total",
        "fer_http_request_duration_seconds_bucket",
        "fer_inference_duration_seconds_bucket",
        "fer_detection_duration_seconds_bucket",
        "fer_faces_per_image_bucket",
        "fer_predictions_total",
        "fer_prediction_confidence_bucket",
        "fer_no_face_total",
        "fer_model_info",
        "fer_model_ready 1.0",
    ):
        assert name in text, name
    assert 'route="/predict"' in text and 'status="422"' in text
    assert 'fer_model_info{name="fer-resnet18"' in text


def test_unknown_paths_do_not_explode_label_cardinality(api_client):
    for i in range(5):
        assert api_client.get(f"/nope/{i}").status_code == 404
    text = api_client.get("/metrics").text
    assert 'route="unmatched"' in text and "/nope/" not in text


def test_openapi_docs(api_client):
    spec = api_client.get("/openapi.json").json()
    assert {"/predict", "/health", "/ready", "/model", "/metrics"} <= set(spec["paths"])
    responses = spec["paths"]["/predict"]["post"]["responses"]
    assert {"200", "400", "413", "415", "422", "503"} <= set(responses)
    assert api_client.get("/docs").status_code == 200


@pytest.mark.parametrize(
    ("photo", "turn", "faces"), [("grace_hopper.jpg", 90, 1), ("grace_hopper.jpg", 270, 1), ("group.jpg", 180, 3)]
)
def test_a_photo_turned_without_exif_is_turned_back(api_client, photo, turn, faces):
    # A turned photo whose EXIF orientation tag was lost, in which the detector finds no face as it
    # is: the app tries the other orientations, keeps the upright one and says which it used.
    from fer.inference import rotate

    rgb = np.asarray(Image.open(EXAMPLES / photo).convert("RGB"))
    upright = post(api_client, jpeg_bytes(rgb)).json()
    turned = post(api_client, jpeg_bytes(rotate(rgb, turn))).json()
    assert upright["rotation"] == 0 and turned["face_count"] == faces
    assert turned["rotation"] == (360 - turn) % 360 and turned["image"] == upright["image"]
    assert [f["emotion"] for f in turned["faces"]] == [f["emotion"] for f in upright["faces"]]


def test_docs_and_schema_have_their_own_route_label(api_client):
    for path in ("/docs", "/openapi.json", "/docs/assets/swagger-ui.css"):
        assert api_client.get(path).status_code == 200, path
    assert api_client.get("/redoc").status_code == 404  # not offered: it cannot work offline
    text = api_client.get("/metrics").text
    for route in ("/docs", "/openapi.json", "/docs/assets"):
        assert f'route="{route}",status="200"' in text, route
