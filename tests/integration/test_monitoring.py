"""Monitoring config checked by the real tools: promtool (config, rules, rule unit tests), amtool."""

from __future__ import annotations

import re
import subprocess

import yaml
from conftest import EXAMPLES, REPO, require_binary

PROM = REPO / "monitoring" / "prometheus"
AM = REPO / "monitoring" / "alertmanager"


def run(*cmd, cwd=None):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


def test_promtool_checks_config_and_rules():
    promtool = require_binary("promtool", "Prometheus config checks (Debian package prometheus)")
    assert "SUCCESS" in run(promtool, "check", "config", "prometheus.yml", cwd=PROM)
    assert "SUCCESS: 19 rules found" in run(promtool, "check", "rules", "alerts.yml", cwd=PROM)


def test_every_alert_fires_and_stays_quiet_in_promtool_unit_tests():
    promtool = require_binary("promtool", "alert rule unit tests (Debian package prometheus)")
    assert "SUCCESS" in run(promtool, "test", "rules", "alerts_test.yml", cwd=PROM)
    alerts = {
        r["alert"]
        for g in yaml.safe_load((PROM / "alerts.yml").read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    }
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text())["tests"]
    cases = [c for t in tests for c in t["alert_rule_test"]]
    fired = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert fired == alerts and quiet == alerts  # every rule has a firing and a quiet case


def test_amtool_checks_alertmanager_config(tmp_path):
    amtool = require_binary("amtool", "Alertmanager config check (Debian package prometheus-alertmanager)")
    # Point the template glob at the repository's templates, as the container mounts them.
    text = (AM / "alertmanager.yml").read_text().replace("/etc/alertmanager/templates/", f"{AM / 'templates'}/")
    (tmp_path / "alertmanager.yml").write_text(text)
    out = run(amtool, "check-config", str(tmp_path / "alertmanager.yml"))
    assert "SUCCESS" in out and "2 inhibit rules" in out and "1 templates" in out
    assert "password:" not in (AM / "alertmanager.yml").read_text()  # secrets come from a file


def test_rules_only_use_metrics_the_app_exports(api_client):
    api_client.post("/predict", files={"file": ("a.jpg", (EXAMPLES / "astronaut.jpg").read_bytes(), "image/jpeg")})
    exported = api_client.get("/metrics").text
    used = set(re.findall(r"\b(fer_[a-z_]+)", (PROM / "alerts.yml").read_text()))
    assert used, "no fer_* metrics in the rules"
    for name in used:
        assert re.search(rf"^{name}[{{ ]", exported, re.M), f"{name} is used by an alert but not exported"
