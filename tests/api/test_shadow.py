"""Shadow rollout under concurrent load: every request succeeds and the shadow's answers are counted."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from conftest import EXAMPLES
from fastapi.testclient import TestClient

from fer.config import Settings
from fer.serving.app import create_app


def metric(text: str, line_start: str) -> float:
    return float(next(line for line in text.splitlines() if line.startswith(line_start)).rsplit(" ", 1)[1])


GROUP = (EXAMPLES / "group.jpg").read_bytes()  # three faces


def post_group(c, n: int, concurrency: int = 8) -> list[int]:
    """POST the group photo `n` times, `concurrency` at once; the status codes."""
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(lambda _: c.post("/predict", files={"file": ("g.jpg", GROUP, "image/jpeg")}).status_code,
                             range(n)))  # fmt: skip


def settled(c, handled: int, timeout: float = 120) -> str:
    """/metrics once the shadow has compared or skipped `handled` images (it runs on its own thread)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        text = c.get("/metrics").text
        done = metric(text, "fer_shadow_inference_duration_seconds_count") + metric(text, "fer_shadow_skipped_total")
        if done >= handled or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def test_a_shadow_model_answers_the_same_faces_after_the_response(tmp_path):
    # The shipped fp32 parent (version 1) shadows the int8 production model. A high in-flight
    # limit: this test is about every face being compared (the busy skip is tested below).
    settings = Settings(ui=False, registry_dir=str(tmp_path / "reg"), shadow_model="fer-resnet18@1",
                        shadow_max_inflight=64)  # fmt: skip
    with TestClient(create_app(settings)) as c:
        statuses = post_group(c, 24)
        text = settled(c, 24)
    assert statuses == [200] * 24
    agreed = metric(text, 'fer_shadow_predictions_total{agreed="true"}')
    disagreed = metric(text, 'fer_shadow_predictions_total{agreed="false"}')
    assert agreed + disagreed == 24 * 3  # every face of every answer, compared
    assert agreed / (agreed + disagreed) > 0.6  # int8 and its parent mostly agree
    assert 'fer_shadow_info{name="fer-resnet18",version="1"} 1.0' in text
    assert metric(text, "fer_shadow_inference_duration_seconds_count") == 24
    assert metric(text, "fer_shadow_skipped_total") == 0


def test_the_shadow_uses_only_spare_cores(tmp_path):
    # One request at a time, with the shadow done before the next, leaves cores to spare: every
    # image is compared. With 8 at once and a limit of one photo in flight, the shadow steps aside
    # for some (counted), and the images it did take are compared in full; no request fails.
    settings = Settings(ui=False, registry_dir=str(tmp_path / "reg"), shadow_model="fer-resnet18@1",
                        shadow_max_inflight=1)  # fmt: skip
    with TestClient(create_app(settings)) as c:
        for i in range(4):  # each waits for the shadow, as a server between visitors would
            assert post_group(c, 1) == [200]
            text = settled(c, i + 1)
        assert metric(text, "fer_shadow_skipped_total") == 0
        assert metric(text, "fer_shadow_inference_duration_seconds_count") == 4
        statuses = post_group(c, 40)
        text = settled(c, 44)
    assert statuses == [200] * 40
    skipped = metric(text, "fer_shadow_skipped_total")
    compared = metric(text, "fer_shadow_inference_duration_seconds_count")
    assert skipped > 0 and compared + skipped == 44
    faces = sum(metric(text, f'fer_shadow_predictions_total{{agreed="{a}"}}') for a in ("true", "false"))
    assert faces == compared * 3


def test_a_shadow_that_cannot_load_is_refused_and_production_serves(tmp_path):
    settings = Settings(ui=False, registry_dir=str(tmp_path / "reg"), shadow_model="fer-resnet18@99")
    with TestClient(create_app(settings)) as c:
        r = c.post("/predict", files={"file": ("a.jpg", (EXAMPLES / "astronaut.jpg").read_bytes(), "image/jpeg")})
        text = c.get("/metrics").text
    assert r.status_code == 200 and "fer_model_load_failures_total 1.0" in text
    assert "fer_shadow_inference_duration_seconds_count 0.0" in text


def test_an_admin_call_sets_replaces_and_stops_the_shadow(tmp_path):
    token = "test-only-admin-token-for-shadow"
    auth = {"authorization": f"Bearer {token}"}
    photo = {"file": ("a.jpg", (EXAMPLES / "astronaut.jpg").read_bytes(), "image/jpeg")}
    settings = Settings(ui=False, registry_dir=str(tmp_path / "reg"), admin_token=token)
    with TestClient(create_app(settings)) as c:
        assert c.post("/admin/shadow", json={"model": "fer-resnet18@1"}).status_code == 401
        assert c.post("/admin/shadow", json={"model": "no-version"}, headers=auth).status_code == 400
        assert c.post("/admin/shadow", json={"model": "fer-resnet18@1", "share": 2}, headers=auth).status_code == 400

        r = c.post("/admin/shadow", json={"model": "fer-resnet18@1", "share": 1.0}, headers=auth)
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "shadowing", "model": {"name": "fer-resnet18", "version": "1"}, "share": 1.0}
        assert c.post("/predict", files=photo).status_code == 200

        # A candidate that cannot load is refused and the one shadowing stays.
        r = c.post("/admin/shadow", json={"model": "fer-resnet18@99"}, headers=auth)
        assert r.status_code == 409 and r.json()["error"] == "model_refused"
        assert c.post("/predict", files=photo).status_code == 200

        r = c.post("/admin/shadow", json={"model": "fer-resnet18@2"}, headers=auth)  # replaces, share kept
        assert r.json()["model"]["version"] == "2" and r.json()["share"] == 1.0
        assert c.post("/predict", files=photo).status_code == 200
        text = settled(c, 3)
        assert 'fer_shadow_info{name="fer-resnet18",version="1"} 0.0' in text
        assert 'fer_shadow_info{name="fer-resnet18",version="2"} 1.0' in text
        assert metric(text, "fer_shadow_inference_duration_seconds_count") == 3  # one face, three answers

        r = c.post("/admin/shadow/off", headers=auth)
        assert r.json() == {"status": "off", "model": None, "share": 1.0}
        assert c.post("/predict", files=photo).status_code == 200
        text = c.get("/metrics").text
    assert metric(text, "fer_shadow_inference_duration_seconds_count") == 3  # nothing shadows any more
    assert 'fer_shadow_info{name="fer-resnet18",version="2"} 0.0' in text
