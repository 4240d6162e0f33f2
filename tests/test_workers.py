"""Several uvicorn workers behind one port, with Prometheus metrics summed across them."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import EXAMPLES, PRODUCTION_VERSION, app_process

pytestmark = pytest.mark.integration


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def test_two_workers_share_one_metrics_view(tmp_path):
    mp_dir = tmp_path / "prom-multiproc"
    photo = (EXAMPLES / "astronaut.jpg").read_bytes()
    n = 64
    with app_process(tmp_path, FER_WORKERS="2", FER_UI="false", PROMETHEUS_MULTIPROC_DIR=str(mp_dir)) as url:

        def one(_):
            # A new connection per request, so the kernel spreads them over both workers.
            with httpx.Client(base_url=url, timeout=60) as c:
                return c.post("/predict", files={"file": ("a.jpg", photo, "image/jpeg")}).status_code

        with ThreadPoolExecutor(16) as pool:
            assert set(pool.map(one, range(n))) == {200}
        pids = {p.stem.rsplit("_", 1)[1] for p in mp_dir.glob("counter_*.db")}
        assert len(pids) == 2, f"requests were not spread over both workers: {pids}"
        # Whichever worker answers the scrape, it reports both workers' counts, every time.
        for _ in range(6):
            text = httpx.get(f"{url}/metrics").text
            assert metric(text, 'fer_images_analyzed_total{source="api"}') == n
            assert metric(text, 'fer_predictions_total{emotion="happy"}') == n
            assert metric(text, 'fer_http_requests_total{method="POST",route="/predict",status="200"}') == n
            assert metric(text, "fer_model_ready") == 1
            assert metric(text, f'fer_model_info{{name="fer-resnet18",version="{PRODUCTION_VERSION}"}}') == 1
            assert metric(text, "fer_inference_duration_seconds_count") == n
