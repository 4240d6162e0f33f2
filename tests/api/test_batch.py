"""`POST /predict/batch` over HTTP with the real model: per-file results in order, limits, errors."""

from __future__ import annotations

from conftest import EXAMPLES
from fastapi.testclient import TestClient

from fer.config import Settings
from fer.serving.app import create_app


def files(*items):
    return [("files", item) for item in items]


def photo(name):
    return (name, (EXAMPLES / name).read_bytes(), "image/jpeg")


def test_each_file_gets_what_predict_would_answer_in_order(api_client):
    r = api_client.post(
        "/predict/batch",
        files=files(
            photo("group.jpg"),
            ("notes.txt", b"hello", "text/plain"),
            ("empty.jpg", b"", "image/jpeg"),
            photo("astronaut.jpg"),
        ),
    )
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["file"] for x in results] == ["group.jpg", "notes.txt", "empty.jpg", "astronaut.jpg"]
    assert [x["status"] for x in results] == [200, 415, 400, 200]
    assert results[1]["error"]["error"] == "unsupported_media_type" and results[2]["error"]["error"] == "empty_upload"
    alone = api_client.post("/predict", files={"file": photo("group.jpg")}).json()
    assert results[0]["result"]["faces"] == alone["faces"]  # the same answer as /predict
    assert results[3]["result"]["emotion"] == "happy" and results[0]["result"]["face_count"] == 3


def test_no_face_is_a_per_file_422(api_client):
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((300, 300, 3), 127, np.uint8)).save(buf, format="PNG")
    (item,) = api_client.post("/predict/batch", files=files(("blank.png", buf.getvalue(), "image/png"))).json()[
        "results"
    ]
    assert item["status"] == 422 and item["error"]["error"] == "no_face" and item["result"] is None


def test_limits_on_count_and_total_size(shipped_service):
    settings = Settings(ui=False, batch_max_files=3, batch_max_bytes=150_000)
    with TestClient(create_app(settings, service=shipped_service)) as c:
        r = c.post("/predict/batch", files=files(*[("tiny.jpg", b"x", "image/jpeg")] * 4))
        assert r.status_code == 413 and r.json()["error"] == "too_many_files" and "at most 3" in r.json()["detail"]
        big = ("big.jpg", b"\xff" * 100_000, "image/jpeg")
        r = c.post("/predict/batch", files=files(big, big, big))
        assert r.status_code == 413 and r.json()["error"] == "upload_too_large" and "150,000" in r.json()["detail"]


def test_missing_field_is_a_clear_400(api_client):
    r = api_client.post("/predict/batch", files={"file": photo("astronaut.jpg")})
    assert r.status_code == 400 and r.json()["error"] == "missing_files" and "'files'" in r.json()["detail"]


def test_in_the_openapi_schema_with_an_example(api_client):
    op = api_client.get("/openapi.json").json()["paths"]["/predict/batch"]["post"]
    assert set(op["responses"]) >= {"200", "400", "413", "503"}
    schema = api_client.get("/openapi.json").json()["components"]["schemas"]["BatchOut"]
    assert schema["examples"][0]["results"][1]["status"] == 415
