"""Shared fixtures: small synthetic FER-2013 files, the real data when present, a tiny trained artifact.

Tests live in four folders, each a marker (`pytest -m unit`, `-m "not e2e"`): unit (one module, no
servers), api (the HTTP API), integration (real servers and tools), e2e (a real browser).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
FER_DIR = Path(os.environ.get("FER_SHARED_DATA", REPO.parent / "shared" / "data" / "fer2013"))
FER_CSV = FER_DIR / "fer2013_reconstructed.csv.gz"
FERPLUS_CSV = FER_DIR / "fer2013new.csv"


SUITES = ("unit", "api", "integration", "e2e")


def pytest_collection_modifyitems(config, items):
    # The folder is the suite: mark each test with it, so `-m` selects by folder.
    for item in items:
        suite = next((p for p in Path(item.fspath).relative_to(REPO / "tests").parts if p in SUITES), None)
        if suite:
            item.add_marker(getattr(pytest.mark, suite))


def synthetic_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Learnable fake faces: each class is a bright blob at its own position plus noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 7
    x = rng.integers(0, 60, size=(n, 48, 48)).astype(np.int32)
    for i, c in enumerate(y):
        r, col = 6 + (c // 3) * 14, 6 + (c % 3) * 14
        x[i, r : r + 12, col : col + 12] += 180
    return np.clip(x, 0, 255).astype(np.uint8), y


def write_csv(path: Path, n_train: int = 70, n_val: int = 21, n_test: int = 21, seed: int = 0) -> Path:
    x, y = synthetic_images(n_train + n_val + n_test, seed)
    usage = ["Training"] * n_train + ["PublicTest"] * n_val + ["PrivateTest"] * n_test
    lines = ["emotion,pixels,Usage"]
    lines += [f"{y[i]},{' '.join(map(str, x[i].ravel()))},{usage[i]}" for i in range(len(y))]
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


@pytest.fixture
def tiny_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "fer2013.csv")


@pytest.fixture(scope="session")
def session_csv(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "fer2013.csv", n_train=140, n_val=35, n_test=35)


@pytest.fixture(scope="session")
def trained_artifact(tmp_path_factory, session_csv) -> Path:
    """A real artifact from two quick epochs on synthetic data (ImageNet stem, CPU)."""
    require_module("torch", "training (the training requirements, requirements.txt)")
    from fer.config import load_train_config
    from fer.train import fit

    cfg = load_train_config(
        None, ["epochs=2", "batch_size=32", "eval_batch_size=64", "model.arch=resnet18", "precision=fp32"]
    )
    result = fit(cfg, data_path=str(session_csv), run_dir=tmp_path_factory.mktemp("run") / "r")
    return result.artifact_dir


@pytest.fixture(scope="session")
def fer2013_csv() -> Path:
    if not FER_CSV.is_file():
        pytest.skip(f"FER-2013 data not found at {FER_CSV} (put ../shared/data/fer2013 beside the repo)")
    return FER_CSV


@pytest.fixture(scope="session")
def fer2013(fer2013_csv):
    """FER-2013, decoded once per machine: the parse cache (~/.cache/fer, keyed by the file's
    checksum) outlives the test session, so only the first run pays the ~10 s parse."""
    from fer.data import load_dataset

    return load_dataset(fer2013_csv)


EXAMPLES = REPO / "fer" / "assets" / "examples"


def load_script(relpath: str):
    """A script outside the fer package (e.g. deploy/docker/prune_registry.py) as a module."""
    import importlib.util

    path = REPO / relpath
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The shipped production version, as the registry's alias file says (tests must not hard-code it).
PRODUCTION_VERSION = str(json.loads((REPO / "models/registry/fer-resnet18/aliases.json").read_text())["production"])


@pytest.fixture(scope="session")
def shipped_service():
    """The real shipped production model behind the real face detector."""
    from fer.config import Settings
    from fer.serving.holder import load_service

    return load_service(Settings(registry_dir=str(REPO / ".fer" / "never-written")))


@pytest.fixture(scope="session")
def api_client(tmp_path_factory):
    """The real app (no UI) serving the shipped production model through its lifespan."""
    from fastapi.testclient import TestClient

    from fer.config import Settings
    from fer.serving.app import create_app

    settings = Settings(registry_dir=str(tmp_path_factory.mktemp("registry")), ui=False)
    with TestClient(create_app(settings)) as client:
        yield client


def jpeg_bytes(rgb: np.ndarray, **save_kw) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90, **save_kw)
    return buf.getvalue()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _missing(what: str, why: str, installer: str) -> None:
    # The one place a missing tool or package is decided: a skip on a developer's machine (with
    # what to run), a failure in CI (CI=true), where everything must be installed.
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is required in CI ({why}); {installer} installs it", pytrace=False)
    pytest.skip(f"{what} not installed ({why}); `make test` installs it", allow_module_level=True)


def require_binary(path: str, why: str) -> str:
    """The binary's path; a skip when absent locally, a failure in CI (CI=true), where it must exist."""
    import shutil

    found = shutil.which(path)
    if found:
        return found
    _missing(path, why, ".ci/run")


def require_docker(why: str) -> str:
    """The docker client's path once an engine answers (`deploy/docker/engine.sh` starts one for
    `make test`); a skip locally, a failure in CI, like require_binary."""
    import subprocess

    docker = require_binary("docker", why)
    try:
        ok = subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        ok = False
    if not ok:
        _missing("a running Docker engine", why, "deploy/docker/engine.sh (run by make test)")
    return docker


def require_module(name: str, why: str):
    """The imported module; a skip when absent locally, a failure in CI, like require_binary.

    Works at module level too (`optuna = require_module("optuna", "...")` above the tests).
    """
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        _missing(f"Python package {name}", why, "requirements-dev.txt")


class LiveApp(str):
    """The URL of an app started by `app_process`, with its process and log file."""

    proc: Any
    log_path: Path


@contextlib.contextmanager
def managed_process(cmd: list[str], log_path: Path, ready_url: str, timeout: float = 120, **popen_kw):
    """Start `cmd` (output to `log_path`), wait until `ready_url` answers 200, stop it afterwards."""
    import subprocess
    import time
    import urllib.request

    with open(log_path, "a") as log:  # "a": a restart on the same port keeps the first log
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, **popen_kw)
    name = Path(cmd[1] if "python" in Path(cmd[0]).name else cmd[0]).name  # "app.py", "prometheus"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            if time.time() > deadline:
                pytest.fail(f"{name} not ready within {timeout:.0f} s:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(ready_url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.3)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def app_process(
    workdir: Path, app_dir: Path = REPO, wait_for: str = "/ready", port: int | None = None, **env_vars: str
):
    """The real app in its own process (`python app.py`), over real HTTP on 127.0.0.1; yields its URL.

    It is up once `wait_for` answers 200 (`/health` for an app expected to start without a model).
    """
    import sys

    port = port or free_port()
    log_path = workdir / f"app-{port}.log"
    env = {
        **os.environ,
        "FER_PORT": str(port),
        "FER_HOST": "127.0.0.1",
        "FER_REGISTRY_DIR": str(workdir / "registry"),
        **env_vars,
    }
    url = LiveApp(f"http://127.0.0.1:{port}")
    with managed_process([sys.executable, "app.py"], log_path, f"{url}{wait_for}", cwd=app_dir, env=env) as proc:
        url.proc, url.log_path = proc, log_path
        yield url


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    """The real app with its UI, serving the shipped model, in its own process."""
    with app_process(tmp_path_factory.mktemp("live")) as url:
        yield url
