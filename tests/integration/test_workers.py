"""Several uvicorn workers behind one port, with Prometheus metrics summed across them."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import httpx
from conftest import EXAMPLES, PRODUCTION_VERSION, app_process


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def test_two_workers_share_one_metrics_view(tmp_path):
    mp_dir = tmp_path / "prom-multiproc"
    photo = (EXAMPLES / "astronaut.jpg").read_bytes()
    n = 0
    with app_process(tmp_path, FER_WORKERS="2", FER_UI="false", PROMETHEUS_MULTIPROC_DIR=str(mp_dir)) as url:

        def one(_):
            # A new connection per request, so the kernel spreads them over both workers.
            with httpx.Client(base_url=url, timeout=60) as c:
                return c.post("/predict", files={"file": ("a.jpg", photo, "image/jpeg")}).status_code

        def pids():
            """Workers that have analysed an image, read from their own metric files."""
            from prometheus_client.mmap_dict import MmapedDict

            served = set()
            for f in mp_dir.glob("counter_*.db"):
                d = MmapedDict(str(f), read_mode=True)
                if any("fer_images_analyzed" in key and value > 0 for key, value, _ in d.read_all_values()):
                    served.add(f.stem.rsplit("_", 1)[1])
                d.close()
            return served

        # Rounds of 32 concurrent requests until both workers have served some (the first round
        # almost always does it; the kernel decides which worker accepts).
        with ThreadPoolExecutor(16) as pool:
            while n < 320 and (n == 0 or len(pids()) < 2):
                assert set(pool.map(one, range(32))) == {200}
                n += 32
        assert len(pids()) == 2, f"{n} requests were not spread over both workers: {pids()}"
        # Whichever worker answers the scrape, it reports both workers' counts, every time.
        for _ in range(6):
            text = httpx.get(f"{url}/metrics").text
            assert metric(text, 'fer_images_analyzed_total{source="api"}') == n
            assert metric(text, 'fer_predictions_total{emotion="happy"}') == n
            assert metric(text, 'fer_http_requests_total{method="POST",route="/predict",status="200"}') == n
            assert metric(text, "fer_model_ready") == 1
            assert metric(text, f'fer_model_info{{name="fer-resnet18",version="{PRODUCTION_VERSION}"}}') == 1
            assert metric(text, "fer_inference_duration_seconds_count") == n


def test_workers_start_reliably_on_a_busy_machine(tmp_path):
    # Four busy loops on two cores (bounded: they end by themselves after 120 s, and are killed
    # when the test ends). Workers importing Gradio and loading the model then start slowly; none
    # may be killed for missing uvicorn's supervisor ping.
    import subprocess
    import sys
    import time

    burners = [
        subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 120: pass"])
        for _ in range(4)
    ]
    try:
        with app_process(tmp_path, FER_WORKERS="2", PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "mp")) as url:
            assert httpx.get(f"{url}/ready", timeout=30).status_code == 200
            # The first worker answers /ready; wait (bounded) for the second to finish starting.
            deadline = time.time() + 180
            while url.log_path.read_text().count("Application startup complete") < 2 and time.time() < deadline:
                time.sleep(0.5)
            log = url.log_path.read_text()
    finally:
        for b in burners:
            b.kill()
    assert log.count("Started server process") == 2, log[-3000:]
    assert "died" not in log and "not ready in time" not in log, log[-3000:]
