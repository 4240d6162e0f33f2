"""Docker helpers shared by the image and compose tests: the base image, a clean build context."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO, require_binary

TAG = "emotion-api:test"
PROMETHEUS_IMAGE = "fer-prometheus:bookworm"  # Prometheus + Alertmanager from Debian's packages
HOST_CAS = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))


def docker(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        pytest.fail(f"docker {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def base_image() -> str:
    """python:3.11-slim when the engine has it, else the local Debian + Python 3.11 base."""
    if docker("image", "inspect", "python:3.11-slim", check=False).returncode == 0:
        return "python:3.11-slim"
    return make_image("fer-base:bookworm")


def clean_checkout(dest: Path) -> Path:
    """The files a fresh clone would have (tracked, plus new files git does not ignore)."""
    files = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    for ca in HOST_CAS:  # this machine's TLS-intercepting proxy, for the build stage's pip only
        shutil.copy(ca, dest / "deploy/docker/extra-ca" / ca.name)
    return dest


def build(context: Path, base: str) -> tuple[str, float]:
    t0 = time.time()
    r = docker("build", "--network", "host", "--build-arg", f"BASE_IMAGE={base}", "-t", TAG, str(context), timeout=1200)
    return r.stdout, time.time() - t0


def make_image(tag: str, *packages: str) -> str:
    """A local image from Debian packages (deploy/docker/make-base.sh), unless the engine has it."""
    if docker("image", "inspect", tag, check=False).returncode != 0:
        require_binary("debootstrap", "making local images (Debian package debootstrap)")
        r = subprocess.run(
            [str(REPO / "deploy/docker/make-base.sh"), tag, *packages], capture_output=True, text=True, timeout=900
        )
        if r.returncode != 0:
            pytest.fail(f"make-base.sh {tag} failed:\n{r.stdout}\n{r.stderr}")
    return tag


def app_image(tmp: Path) -> str:
    """The serving image built from a clean checkout (reused when this run already built it)."""
    if docker("image", "inspect", TAG, check=False).returncode != 0:
        build(clean_checkout(tmp), base_image())
    return TAG
