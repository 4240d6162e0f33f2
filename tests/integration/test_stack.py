"""The deployment stack's files, checked by the real schema and against each other.

No Docker engine, Grafana or Fluentd runs here, so: docker-compose.yml is validated against the
Compose specification schema (check-jsonschema ships it), and every name one file relies on in
another (service names, ports, mount paths, datasource uid, secret path, log tag) is checked to
agree. The Grafana queries themselves run against a real Prometheus in test_alerting_e2e.py.
"""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from datetime import datetime

import pytest
import yaml
from conftest import EXAMPLES, PRODUCTION_VERSION, REPO

MON = REPO / "monitoring"
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_compose_file_matches_the_compose_specification():
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(REPO / "docker-compose.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "validation done" in r.stdout


def test_compose_runs_the_whole_stack_with_healthchecks_and_volumes():
    assert {"app", "prometheus", "alertmanager", "grafana", "fluentd", "mailpit"} <= set(SERVICES)
    default = {n: s for n, s in SERVICES.items() if "profiles" not in s}
    assert set(default) == {"app", "prometheus", "alertmanager", "grafana", "fluentd", "mailpit"}
    for name, svc in default.items():
        assert "healthcheck" in svc, f"{name} has no healthcheck"
    clearml = {n for n, s in SERVICES.items() if s.get("profiles") == ["clearml"]}
    assert {"clearml-apiserver", "clearml-webserver", "clearml-fileserver"} <= clearml
    for svc in SERVICES.values():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):  # a bind mount: the file or folder must be in the repository
                assert (REPO / source).exists(), f"compose mounts {source}, which does not exist"
            else:
                assert source in COMPOSE["volumes"], f"named volume {source} is not declared"


def test_prometheus_and_grafana_and_alertmanager_point_at_compose_services():
    prom = yaml.safe_load((MON / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    targets += [t for am in prom["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]]
    for target in targets:
        host, port = target.split(":")
        if host == "localhost":
            continue  # Prometheus scraping itself
        published = {p.split(":")[-1] for p in SERVICES[host].get("ports", [])}
        assert port in published or host == "app", f"{target}: {host} does not listen on {port}"
    assert "8000:8000" in SERVICES["app"]["ports"]

    ds = yaml.safe_load((MON / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["url"] == "http://prometheus:9090" and source["uid"] == "prometheus"
    dash = json.loads((MON / "grafana" / "dashboards" / "fer.json").read_text())
    assert {p["datasource"]["uid"] for p in dash["panels"]} == {source["uid"]}
    provider = yaml.safe_load((MON / "grafana" / "provisioning" / "dashboards" / "fer.yml").read_text())
    mounts = dict(v.split(":")[:2] for v in SERVICES["grafana"]["volumes"])
    assert mounts["./monitoring/grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    assert mounts["./monitoring/grafana/provisioning"] == "/etc/grafana/provisioning"

    am = yaml.safe_load((MON / "alertmanager" / "alertmanager.yml").read_text())
    assert am["global"]["smtp_smarthost"] == "mailpit:1025"
    secret = SERVICES["alertmanager"]["secrets"][0]
    assert am["global"]["smtp_auth_password_file"] == f"/run/secrets/{secret}"
    assert COMPOSE["secrets"][secret] == {"environment": "SMTP_PASSWORD"}
    am_mounts = dict(v.split(":")[:2] for v in SERVICES["alertmanager"]["volumes"])
    assert am["templates"] == [am_mounts["./monitoring/alertmanager/templates"] + "/*.tmpl"]


def test_no_default_passwords_and_every_variable_documented():
    grafana_pw = SERVICES["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?.+\}", grafana_pw), "Grafana's password must have no default"
    used = set(re.findall(r"\$\{([A-Z_]+)", (REPO / "docker-compose.yml").read_text()))
    used.add("SMTP_PASSWORD")  # read by the secret, not interpolated
    example = dict(
        line.split("=", 1)
        for line in (REPO / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    documented = set(example) | {v for v in used if v.startswith("CLEARML_") or v == "GRAFANA_ADMIN_USER"}
    assert used <= documented, f"not in .env.example: {used - documented}"
    for secret in ("GRAFANA_ADMIN_PASSWORD", "SMTP_PASSWORD", "FER_ADMIN_TOKEN"):
        assert example[secret] == "", f"{secret} must be empty in .env.example"
    assert ".env" in (REPO / ".gitignore").read_text().splitlines()


def test_grafana_dashboard_is_generated_and_has_every_required_panel():
    sys.path.insert(0, str(MON / "grafana"))
    try:
        import build_dashboard
    finally:
        sys.path.pop(0)
    committed = (MON / "grafana" / "dashboards" / "fer.json").read_text()
    assert committed == build_dashboard.render(), "run python monitoring/grafana/build_dashboard.py"
    dash = json.loads(committed)
    titles = {p["title"] for p in dash["panels"]}
    assert {
        "Request rate",
        "Error rate",
        "/predict latency",
        "Model time per image",
        "Predictions by emotion",
        "Confidence distribution",
        "Faces per image",
        "No-face rate",
        "Model version",
        "Service up",
    } <= titles
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    cells = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, f"{p['title']} is wider than the grid"
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine
        assert p["targets"] and all(t["expr"] for t in p["targets"])


def test_fluentd_receives_docker_logs_and_parses_the_apps_json_lines():
    conf = (MON / "fluentd" / "fluent.conf").read_text()
    forward = re.search(r"<source>\s*@type forward\s*port (\d+)", conf)
    assert forward and f"127.0.0.1:{forward[1]}:{forward[1]}" in SERVICES["fluentd"]["ports"]
    logging_opts = SERVICES["app"]["logging"]
    assert logging_opts["driver"] == "fluentd"
    tag = logging_opts["options"]["tag"]
    assert f"<filter {tag}>" in conf and re.search(r"key_name log\b", conf) and "@type json" in conf
    assert re.search(r"<match fer\.\*\*>\s*@type file", conf)  # the durable output
    assert re.search(r"<match \*\*>\s*@type file", conf)  # and the other containers' lines
    for name, svc in SERVICES.items():  # every container of the default stack logs to Fluentd
        if name != "fluentd" and "profiles" not in svc:
            assert svc["logging"]["driver"] == "fluentd", name
            assert svc["logging"]["options"]["fluentd-address"].endswith(f":{forward[1]}"), name
    # The parser's time format must read the app's timestamps.
    time_format = re.search(r"time_format (\S+)", conf)[1]
    from fer.config import JsonLogFormatter

    line = JsonLogFormatter().format(logging.LogRecord("fer.access", logging.INFO, __file__, 1, "request", None, None))
    datetime.strptime(json.loads(line)["time"], time_format.replace("%L", "%f"))


def test_app_logs_one_json_object_per_request_without_image_bytes(api_client):
    from fer.config import JsonLogFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter())
    access = logging.getLogger("fer.access")
    access.addHandler(handler)
    old_level = access.level
    access.setLevel(logging.INFO)
    photo = (EXAMPLES / "astronaut.jpg").read_bytes()
    try:
        r = api_client.post(
            "/predict", files={"file": ("secret-name.jpg", photo, "image/jpeg")}, headers={"x-request-id": "trace-123"}
        )
        assert r.status_code == 200 and r.headers["x-request-id"] == "trace-123"
        api_client.post("/predict", files={"file": ("x.jpg", b"%PDF-1.4", "image/jpeg")})
    finally:
        access.removeHandler(handler)
        access.setLevel(old_level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    ok, bad = lines
    assert ok["request_id"] == "trace-123" and ok["route"] == "/predict" and ok["status"] == 200
    assert ok["faces"] == 1 and ok["emotions"] == [r.json()["emotion"]] and ok["model_version"] == PRODUCTION_VERSION
    assert isinstance(ok["latency_ms"], float) and ok["level"] == "INFO" and ok["time"].endswith("Z")
    assert bad["status"] == 415 and bad["error"]
    assert "secret-name" not in stream.getvalue() and len(stream.getvalue()) < 1000  # no bytes, no file names


@pytest.mark.parametrize(
    "path",
    [
        "docker-compose.yml",
        "monitoring/grafana/provisioning/datasources/prometheus.yml",
        "monitoring/grafana/provisioning/dashboards/fer.yml",
    ],
)
def test_yaml_files_parse(path):
    assert yaml.safe_load((REPO / path).read_text())
