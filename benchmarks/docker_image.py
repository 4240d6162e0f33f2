"""The serving image's numbers: cold build, code-only rebuild, size, cold start to /ready, memory.

Needs a Docker engine (run it as `deploy/docker/engine.sh python benchmarks/docker_image.py`) and
a base image: python:3.11-slim, or the local one from deploy/docker/make-base.sh.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
TAG = "emotion-api:bench"


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def context(dest: Path) -> Path:
    files = sh("git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard").split("\n")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    for ca in Path("/usr/local/share/ca-certificates").glob("*.crt"):  # a proxy's CA, build stage only
        shutil.copy(ca, dest / "deploy/docker/extra-ca" / ca.name)
    return dest


def build(ctx: Path, base: str, *extra: str) -> float:
    t0 = time.time()
    sh("docker", "build", "--network", "host", *extra, "--build-arg", f"BASE_IMAGE={base}", "-t", TAG, str(ctx))
    return time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base", default="fer-base:bookworm")
    ap.add_argument("--requests", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ctx = context(Path(tmp))
        cold = build(ctx, args.base, "--no-cache")
        (ctx / "fer" / "__init__.py").write_text('"""fer."""  # a code-only change\n')
        warm = build(ctx, args.base)
    size = int(sh("docker", "image", "inspect", TAG, "--format", "{{.Size}}")) / 1e6
    cid = sh("docker", "run", "-d", "--read-only", "--tmpfs", "/tmp", "-p", "127.0.0.1::8000", TAG).strip()
    t0 = time.time()
    try:
        url = "http://127.0.0.1:" + sh("docker", "port", cid, "8000/tcp").split(":")[-1].strip()
        while True:
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        ready = time.time() - t0
        photo = (REPO / "fer/assets/examples/group.jpg").read_bytes()
        with httpx.Client(timeout=30) as c:
            for _ in range(args.requests):
                c.post(f"{url}/predict", files={"file": ("g.jpg", photo, "image/jpeg")}).raise_for_status()
        mem = sh("docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", cid).split("/")[0].strip()
    finally:
        sh("docker", "rm", "-f", cid)
    print(f"base {args.base}; image {size:.0f} MB")
    print(f"build, cold (--no-cache, dependencies downloaded): {cold:.0f} s")
    print(f"rebuild after a code-only change (dependency layer reused): {warm:.1f} s")
    print(f"container start to /ready (read-only, tmpfs /tmp): {ready:.1f} s")
    print(f"memory after {args.requests} /predict requests on a 3-face photo: {mem}")


if __name__ == "__main__":
    main()
