"""Shadow rollout under concurrent load: every request succeeds and the shadow's answers are counted."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from conftest import EXAMPLES
from fastapi.testclient import TestClient

from fer.config import Settings
from fer.serving.app import create_app


def metric(text: str, line_start: str) -> float:
    return float(next(line for line in text.splitlines() if line.startswith(line_start)).rsplit(" ", 1)[1])


def test_a_shadow_model_answers_the_same_faces_after_the_response(tmp_path):
    # The shipped fp32 parent (version 1) shadows the int8 production model.
    settings = Settings(ui=False, registry_dir=str(tmp_path / "reg"), shadow_model="fer-resnet18@1")
    photo = (EXAMPLES / "group.jpg").read_bytes()
    with TestClient(create_app(settings)) as c:

        def one(_):
            return c.post("/predict", files={"file": ("g.jpg", photo, "image/jpeg")}).status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(one, range(24)))
        text = c.get("/metrics").text
    assert statuses == [200] * 24
    agreed = metric(text, 'fer_shadow_predictions_total{agreed="true"}')
    disagreed = metric(text, 'fer_shadow_predictions_total{agreed="false"}')
    assert agreed + disagreed == 24 * 3  # every face of every answer, compared
    assert agreed / (agreed + disagreed) > 0.6  # int8 and its parent mostly agree
    assert 'fer_shadow_info{name="fer-resnet18",version="1"} 1.0' in text
    assert metric(text, "fer_shadow_inference_duration_seconds_count") == 24


def test_a_shadow_that_cannot_load_is_refused_and_production_serves(tmp_path):
    settings = Settings(ui=False, registry_dir=str(tmp_path / "reg"), shadow_model="fer-resnet18@99")
    with TestClient(create_app(settings)) as c:
        r = c.post("/predict", files={"file": ("a.jpg", (EXAMPLES / "astronaut.jpg").read_bytes(), "image/jpeg")})
        text = c.get("/metrics").text
    assert r.status_code == 200 and "fer_model_load_failures_total 1.0" in text
    assert "fer_shadow_inference_duration_seconds_count 0.0" in text
