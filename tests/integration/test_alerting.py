"""End to end, all real, all on 127.0.0.1: the app, Prometheus with the project's scrape config and
alert rules, Alertmanager with the project's config and email template, and an SMTP server
(aiosmtpd) that receives the alert email. Then every Grafana panel query runs against that
Prometheus.

What the test changes in the project's configs, and why: the scrape and alert targets point at this
test's ports; scrape/evaluation intervals are 1 s and Alertmanager's group waits 1 s; the `for:` of
the three alerts it drives is a few seconds (in production they are minutes). SMTP goes to the test's
server with the password from a file, as in production. Expressions, labels, annotations, routes,
inhibition rules and the template are the project's own.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import io
import json
import math
import time
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import EXAMPLES, REPO, app_process, free_port, managed_process, require_binary, require_module
from PIL import Image

pytestmark = [
    pytest.mark.timeout(420),
    # AUTH without TLS is what a loopback-only test server should do (see smtp_server).
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
]

PROM_DIR = REPO / "monitoring" / "prometheus"
AM_DIR = REPO / "monitoring" / "alertmanager"
DASHBOARD = REPO / "monitoring" / "grafana" / "dashboards" / "fer.json"
SMTP_PASSWORD = "test-only-smtp-password"  # written to a temp file, as the compose secret would be
ADMIN_TOKEN = "test-only-admin-token-0123456789"
FAST_FOR = {"FerServiceDown": "2s", "FerModelNotReady": "1s", "FerHighErrorRate": "5s"}


class Inbox:
    """aiosmtpd handler and authenticator: keeps every message and every login it is sent."""

    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []
        self.logins: list[tuple[str, str]] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 Message accepted"

    def __call__(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult

        self.logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=auth_data.password.decode() == SMTP_PASSWORD)

    def subjects(self) -> list[str]:
        return [str(m["subject"]) for m in self.messages]

    def wait_for(self, subject_part: str, timeout: float) -> email.message.EmailMessage:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for m in self.messages:
                if subject_part in str(m["subject"]):
                    return m
            time.sleep(0.5)
        pytest.fail(f"no email with {subject_part!r} in its subject within {timeout:.0f} s; got {self.subjects()}")


@contextlib.contextmanager
def smtp_server(inbox: Inbox):
    from aiosmtpd.controller import Controller

    # AUTH required but allowed without TLS: Alertmanager (Go) sends credentials in clear only to
    # localhost, which is where this server is. PLAIN only: Alertmanager's LOGIN expects the
    # "Username:" challenge that Gmail and Mailpit send, not aiosmtpd's "User Name".
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=inbox,
        auth_required=True,
        auth_require_tls=False,
        auth_exclude_mechanism=["LOGIN"],
    )
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()


def prometheus_config(tmp: Path, app_port: int, prom_port: int, am_port: int) -> Path:
    rules = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in FAST_FOR:
                rule["for"] = FAST_FOR[rule["alert"]]
    (tmp / "alerts.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    cfg["global"] |= {"scrape_interval": "1s", "evaluation_interval": "1s"}
    cfg["rule_files"] = [str(tmp / "alerts.yml")]
    ports = {"app:8000": app_port, "localhost:9090": prom_port, "alertmanager:9093": am_port}
    targets = [sc["targets"] for job in cfg["scrape_configs"] for sc in job["static_configs"]]
    targets += [sc["targets"] for am in cfg["alerting"]["alertmanagers"] for sc in am["static_configs"]]
    for t in targets:
        t[:] = [f"127.0.0.1:{ports[x]}" for x in t]  # KeyError: the project config grew a target
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return tmp / "prometheus.yml"


def alertmanager_config(tmp: Path, smtp_port: int) -> Path:
    cfg = yaml.safe_load((AM_DIR / "alertmanager.yml").read_text())
    # No trailing newline: Alertmanager 0.25 sends the file's bytes as they are, newline included.
    (tmp / "smtp_password").write_text(SMTP_PASSWORD)
    cfg["global"] |= {
        "smtp_smarthost": f"127.0.0.1:{smtp_port}",
        "smtp_require_tls": False,
        "smtp_auth_password_file": str(tmp / "smtp_password"),
    }
    cfg["templates"] = [str(AM_DIR / "templates" / "*.tmpl")]
    cfg["route"] |= {"group_wait": "1s", "group_interval": "1s"}
    (tmp / "alertmanager.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return tmp / "alertmanager.yml"


def query(prom: str, expr: str) -> list[dict]:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10)
    assert r.status_code == 200, f"{expr}: {r.text}"
    return r.json()["data"]["result"]


def wait_until(what: str, check, timeout: float = 60, every: float = 0.5):
    deadline = time.time() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.time() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def alert_state(prom: str, name: str) -> str | None:
    alerts = httpx.get(f"{prom}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    states = {a["state"] for a in alerts if a["labels"]["alertname"] == name}
    return "firing" if "firing" in states else (states.pop() if states else None)


def panel_queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]


def send_traffic(url: str, n_good: int = 6) -> None:
    photo = (EXAMPLES / "astronaut.jpg").read_bytes()
    with httpx.Client(base_url=url, timeout=30) as c:
        for i in range(n_good):
            assert c.post("/predict", files={"file": (f"{i}.jpg", photo, "image/jpeg")}).status_code == 200
        buf = io.BytesIO()
        Image.new("RGB", (320, 240), (90, 140, 200)).save(buf, format="PNG")  # sky: no face
        assert c.post("/predict", files={"file": ("sky.png", buf.getvalue(), "image/png")}).status_code == 422
        assert c.post("/predict", files={"file": ("x.jpg", b"not an image", "image/jpeg")}).status_code == 415


def test_alerts_fire_email_and_resolve_and_every_dashboard_query_has_data(tmp_path):
    prometheus = require_binary("prometheus", "the end-to-end alerting test (Debian package prometheus)")
    alertmanager = require_binary(
        "prometheus-alertmanager", "the end-to-end alerting test (Debian package prometheus-alertmanager)"
    )
    require_module("aiosmtpd", "the SMTP server that receives the alert email")
    app_port, prom_port, am_port = free_port(), free_port(), free_port()
    prom, am = f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{am_port}"
    inbox = Inbox()
    # The shipped fp32 parent shadows the int8 production model, so the shadow panel has data too.
    app_env = {"FER_ADMIN_TOKEN": ADMIN_TOKEN, "FER_UI": "false", "FER_SHADOW_MODEL": "fer-resnet18@1"}

    with contextlib.ExitStack() as stack:
        smtp_port = stack.enter_context(smtp_server(inbox))
        stack.enter_context(
            managed_process(
                [
                    alertmanager,
                    f"--config.file={alertmanager_config(tmp_path, smtp_port)}",
                    f"--storage.path={tmp_path / 'am-data'}",
                    f"--web.listen-address=127.0.0.1:{am_port}",
                    "--cluster.listen-address=",
                ],
                tmp_path / "alertmanager.log",
                f"{am}/-/ready",
            )
        )
        stack.enter_context(
            managed_process(
                [
                    prometheus,
                    f"--config.file={prometheus_config(tmp_path, app_port, prom_port, am_port)}",
                    f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                tmp_path / "prometheus.log",
                f"{prom}/-/ready",
            )
        )

        # 1. Healthy traffic: every dashboard panel has data, and no alert email is sent.
        with app_process(tmp_path, port=app_port, **app_env) as url:
            # Two batches with a scrape between them, so every counter rises between two samples
            # and each rate() is above zero.
            send_traffic(url)
            wait_until(
                "Prometheus to scrape the app's predictions",
                lambda: query(prom, 'sum(fer_predictions_total{job="fer-api"})'),
            )
            send_traffic(url)
            time.sleep(3)
            for title, expr in panel_queries():
                # Grafana fills these in; a 1m window spans many 1 s scrapes.
                result = query(prom, expr.replace("$__rate_interval", "1m"))
                values = [float(s["value"][1]) for s in result]
                assert any(math.isfinite(v) for v in values), f"panel {title!r}: no data for {expr}: {result}"
            assert alert_state(prom, "FerServiceDown") is None
            assert inbox.messages == []

        # 2. The app is killed: FerServiceDown fires and its email arrives.
        wait_until("FerServiceDown to fire", lambda: alert_state(prom, "FerServiceDown") == "firing")
        down = inbox.wait_for("FIRING (1): FerServiceDown", timeout=30)
        body = down.get_body(preferencelist=("plain",)).get_content()
        assert f"fer API is down (127.0.0.1:{app_port})" in body
        assert "Severity: critical" in body and "Runbook: docs/monitoring.md#ferservicedown" in body
        html = down.get_body(preferencelist=("html",)).get_content()
        assert "<h2>fer: FIRING FerServiceDown</h2>" in html
        assert down["To"] == "oncall@example.com"
        assert inbox.logins and inbox.logins[0] == ("fer-alerts@example.com", SMTP_PASSWORD)

        # 3. It comes back without a model: FerServiceDown resolves, FerModelNotReady fires, and the
        #    503s it causes raise FerHighErrorRate, which is inhibited: no email for it.
        with app_process(
            tmp_path, port=app_port, wait_for="/health", FER_MODEL="fer-resnet18@candidate", **app_env
        ) as url:
            resolved = inbox.wait_for("RESOLVED: FerServiceDown", timeout=60)
            assert "RESOLVED: fer API is down" in resolved.get_body(preferencelist=("plain",)).get_content()
            photo = (EXAMPLES / "astronaut.jpg").read_bytes()
            with httpx.Client(base_url=url, timeout=30) as c:

                def failing():
                    r = c.post("/predict", files={"file": ("a.jpg", photo, "image/jpeg")})
                    assert r.status_code == 503 and r.json()["error"] == "model_not_loaded"
                    return alert_state(prom, "FerHighErrorRate") == "firing"

                wait_until("FerHighErrorRate to fire on the 503s", failing, timeout=60)
            not_ready = inbox.wait_for("FIRING (1): FerModelNotReady", timeout=30)
            assert "has no model loaded" in not_ready.get_body(preferencelist=("plain",)).get_content()

            def suppressed():
                alerts = httpx.get(
                    f"{am}/api/v2/alerts", params={"filter": 'alertname="FerHighErrorRate"'}, timeout=10
                ).json()
                return alerts and all(
                    a["status"]["state"] == "suppressed" and a["status"]["inhibitedBy"] for a in alerts
                )

            wait_until("Alertmanager to hold FerHighErrorRate as inhibited", suppressed, timeout=30)
            time.sleep(3)  # several group intervals: an uninhibited alert would have been mailed by now
            assert not any("FerHighErrorRate" in s for s in inbox.subjects()), inbox.subjects()

            # 4. Promote a version to the alias the app serves and reload: FerModelNotReady resolves.
            from fer.registry import open_registry

            open_registry(tmp_path / "registry").promote("fer-resnet18", 1, alias="candidate")
            r = httpx.post(f"{url}/admin/reload", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60)
            assert r.status_code == 200 and r.json()["status"] == "reloaded", r.text
            inbox.wait_for("RESOLVED: FerModelNotReady", timeout=60)
            failures = query(prom, f'fer_model_load_failures_total{{instance="127.0.0.1:{app_port}"}}')
            assert failures and float(failures[0]["value"][1]) >= 1  # the refused start is visible

    # The app's structured log lines carry no image bytes, only what the docs list.
    for line in (tmp_path / f"app-{app_port}.log").read_text().splitlines():
        record = json.loads(line)  # every line is JSON: Fluentd parses them without a regex
        assert "photo" not in record and len(line) < 2000
