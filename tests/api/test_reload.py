"""Live model updates: promote + reload (or poll) under concurrent HTTP load, refusal of bad models."""

from __future__ import annotations

import shutil
import threading
import time

import httpx
import pytest
from conftest import EXAMPLES, PRODUCTION_VERSION, app_process

from fer.registry import open_registry

TOKEN = "test-token-0123456789abcdef"


def _registry_with_copy(tmp_path):
    """A user registry over the shipped one, holding a copy of the production model as version 2."""
    reg = open_registry(tmp_path / "registry")
    shipped = reg.resolve("fer-resnet18@production")
    copy = tmp_path / "copy"
    shutil.copytree(shipped.path, copy)
    (copy / "card.json").unlink()
    return reg, reg.register("fer-resnet18", copy, source_run="test")


def test_promotion_swaps_model_under_load_without_failures(tmp_path):
    reg, v2 = _registry_with_copy(tmp_path)
    photo = (EXAMPLES / "astronaut.jpg").read_bytes()
    statuses, versions, stop = [], [], threading.Event()

    with app_process(tmp_path, FER_ADMIN_TOKEN=TOKEN, FER_UI="false") as url:

        def hammer():
            with httpx.Client(timeout=30) as c:
                while not stop.is_set():
                    r = c.post(f"{url}/predict", files={"file": ("a.jpg", photo, "image/jpeg")})
                    statuses.append(r.status_code)
                    if r.status_code == 200:
                        versions.append(r.json()["model"]["version"])

        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(2)
        reg.promote("fer-resnet18", v2.version, force=True)
        r = httpx.post(f"{url}/admin/reload", headers={"authorization": f"Bearer {TOKEN}"}, timeout=60)
        assert r.status_code == 200 and r.json() == {
            "status": "reloaded",
            "model": {"name": "fer-resnet18", "version": str(v2.version)},
        }
        time.sleep(2)
        stop.set()
        for t in threads:
            t.join()
        metrics = httpx.get(f"{url}/metrics").text

    assert len(statuses) > 20 and set(statuses) == {200}, f"failed requests: {set(statuses)}"
    assert versions[0] == PRODUCTION_VERSION and versions[-1] == str(v2.version)
    assert f'fer_model_info{{name="fer-resnet18",version="{v2.version}"}} 1.0' in metrics


def test_corrupt_model_is_refused_and_old_keeps_serving(tmp_path):
    reg = open_registry(tmp_path / "registry")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.onnx").write_bytes(b"this is not an onnx graph")
    (bad / "meta.json").write_bytes(reg.resolve("fer-resnet18@production").path.joinpath("meta.json").read_bytes())
    mv = reg.register("fer-resnet18", bad)
    with app_process(tmp_path, FER_ADMIN_TOKEN=TOKEN, FER_UI="false") as url:
        reg.promote("fer-resnet18", mv.version, force=True)
        r = httpx.post(f"{url}/admin/reload", headers={"authorization": f"Bearer {TOKEN}"}, timeout=60)
        assert r.status_code == 409 and r.json()["error"] == "model_refused"
        assert "previous model keeps serving" in r.json()["detail"]
        photo = (EXAMPLES / "astronaut.jpg").read_bytes()
        ok = httpx.post(f"{url}/predict", files={"file": ("a.jpg", photo, "image/jpeg")}, timeout=30)
        assert ok.status_code == 200 and ok.json()["model"]["version"] == PRODUCTION_VERSION
        assert "fer_model_load_failures_total 1.0" in httpx.get(f"{url}/metrics").text


def test_registry_polling_picks_up_promotion(tmp_path):
    reg, v2 = _registry_with_copy(tmp_path)
    with app_process(tmp_path, FER_RELOAD_INTERVAL="0.5", FER_UI="false") as url:
        assert httpx.get(f"{url}/ready").json()["model"]["version"] == PRODUCTION_VERSION
        reg.promote("fer-resnet18", v2.version, force=True)
        deadline = time.time() + 30
        while httpx.get(f"{url}/ready").json()["model"]["version"] != str(v2.version):
            assert time.time() < deadline, "promotion not picked up within 30 s"
            time.sleep(0.3)


def test_admin_endpoint_needs_the_token(tmp_path):
    from fastapi.testclient import TestClient

    from fer.config import Settings
    from fer.serving.app import create_app

    with TestClient(create_app(Settings(registry_dir=str(tmp_path), ui=False))) as c:
        assert c.post("/admin/reload").status_code == 403  # disabled without a token
    with TestClient(create_app(Settings(registry_dir=str(tmp_path), ui=False, admin_token=TOKEN))) as c:
        assert c.post("/admin/reload").status_code == 401
        assert c.post("/admin/reload", headers={"authorization": "Bearer wrong-token-wrong-token"}).status_code == 401
        r = c.post("/admin/reload", headers={"authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.json()["status"] == "unchanged"


@pytest.mark.parametrize("token", ["short", "changeme"])
def test_weak_admin_tokens_are_refused(token):
    from pydantic import ValidationError

    from fer.config import Settings

    with pytest.raises(ValidationError, match="FER_ADMIN_TOKEN"):
        Settings(admin_token=token)


def test_an_empty_admin_token_means_admin_is_off(monkeypatch):
    # docker-compose.yml passes FER_ADMIN_TOKEN=${FER_ADMIN_TOKEN:-}: empty must start the app.
    from fer.config import Settings

    monkeypatch.setenv("FER_ADMIN_TOKEN", "")
    assert Settings().admin_token is None
