# Serving image: FastAPI + Gradio + ONNX Runtime, no training stack (torch is not installed).
#   docker build -t emotion-api .
#   docker run -p 8000:8000 emotion-api
# Where Docker Hub cannot be reached, any image with Python 3.11 on Debian works as the base
# (deploy/docker/make-base.sh makes one):  docker build --build-arg BASE_IMAGE=fer-base:bookworm .
ARG BASE_IMAGE=python:3.11-slim

# --- build: install the serving dependencies into a virtual environment -------------------------
FROM ${BASE_IMAGE} AS build
WORKDIR /src
# Behind a TLS-intercepting proxy: its CA certificates (deploy/docker/extra-ca/*.crt, see the
# README there) are trusted by this stage's pip only; the runtime stage below never has them.
COPY deploy/docker/extra-ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Only the requirements before the code: a code-only change reuses this layer (no reinstall).
COPY requirements-serve.txt .
# requirements-serve.txt ends with "-e ." for local installs; the image runs fer from /app instead.
RUN python -m venv /opt/venv \
    && grep -v '^-e' requirements-serve.txt > /tmp/requirements.txt \
    && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt \
    && site=/opt/venv/lib/python3.11/site-packages \
    && rm -rf "$site/pandas/tests" "$site/onnx/backend/test" \
    && find "$site/numpy" -depth -type d -name tests -exec rm -rf {} +
# ^ The libraries' own test suites (79 MB: pandas 46, onnx's backend tests 17, numpy 16) are
#   never imported by a server; leaving them out pays for a fused two-network model in the budget.
# The registry as the image ships it: the versions production can serve or roll back to. Ensemble
# members and fp32 training parents stay in the repository (prune_registry.py says why).
COPY models/registry /src/registry
COPY deploy/docker/prune_registry.py /src/
RUN python /src/prune_registry.py /src/registry

# --- runtime: the venv, the package, the shipped model; non-root ---------------------------------
FROM ${BASE_IMAGE}
# FER_WORKERS=1: one worker already keeps two cores busy (detection and inference release the
# GIL; docs/benchmarks.md measured 2 workers at 0.99x on 2 cores); raise it by one per 2 cores.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    FER_HOST=0.0.0.0 \
    FER_PORT=8000 \
    FER_WORKERS=1 \
    FER_REGISTRY_DIR=/data/registry
RUN useradd --create-home --uid 10001 fer \
    && mkdir -p /data/registry \
    && chown -R fer /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY app.py pyproject.toml ./
COPY fer ./fer
# The production model is baked in (read-only); mount /data/registry for your own versions.
COPY --from=build /src/registry ./models/registry
USER 10001
EXPOSE 8000
VOLUME ["/data/registry"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('FER_PORT', '8000')}/ready\", timeout=4)"]
CMD ["python", "app.py"]
