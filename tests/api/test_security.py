"""Security settings of the API (CORS, rate limits, admin token) and a scan of the repository for secrets."""

from __future__ import annotations

import re
import subprocess

import pytest
from conftest import REPO
from fastapi.testclient import TestClient

from fer.config import Settings
from fer.serving.app import create_app


@pytest.fixture(scope="module")
def closed_client(shipped_service):
    with TestClient(create_app(Settings(ui=False), service=shipped_service)) as c:
        yield c


def test_cors_is_closed_by_default(closed_client):
    pre = closed_client.options(
        "/predict", headers={"origin": "https://evil.example", "access-control-request-method": "POST"}
    )
    assert "access-control-allow-origin" not in pre.headers
    r = closed_client.get("/health", headers={"origin": "https://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_cors_allows_only_configured_origins(shipped_service):
    settings = Settings(ui=False, cors_origins=["https://app.example"])
    with TestClient(create_app(settings, service=shipped_service)) as c:
        ok = c.options("/predict", headers={"origin": "https://app.example", "access-control-request-method": "POST"})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://app.example"
        bad = c.options("/predict", headers={"origin": "https://evil.example", "access-control-request-method": "POST"})
        assert bad.status_code == 400 and "access-control-allow-origin" not in bad.headers
        r = c.get("/health", headers={"origin": "https://app.example"})
        assert r.headers["access-control-allow-origin"] == "https://app.example"


def test_cors_origins_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("FER_CORS_ORIGINS", '["https://a.example", "https://b.example"]')
    assert Settings().cors_origins == ["https://a.example", "https://b.example"]


def test_rate_limit_answers_429_with_retry_after(shipped_service):
    # 2 a minute: the bucket refills one request per 30 s, far slower than this test runs.
    settings = Settings(ui=False, rate_limit_per_minute=2, rate_limit_burst=3)
    with TestClient(create_app(settings, service=shipped_service)) as c:
        empty = {"file": ("a.jpg", b"", "image/jpeg")}  # cheap: refused as empty once admitted
        assert [c.post("/predict", files=empty).status_code for _ in range(3)] == [400, 400, 400]
        r = c.post("/predict", files=empty)
        assert r.status_code == 429 and r.json()["error"] == "rate_limited"
        assert 1 <= int(r.headers["retry-after"]) <= 30
        assert "2 requests a minute" in r.json()["detail"]
        assert c.get("/health").status_code == 200  # only /predict is limited
        assert 'route="/predict",status="429"} 1.0' in c.get("/metrics").text


def test_rate_limit_is_off_by_default(closed_client):
    empty = {"file": ("a.jpg", b"", "image/jpeg")}
    assert {closed_client.post("/predict", files=empty).status_code for _ in range(40)} == {400}


def test_rate_limiter_refills_and_forgets_old_clients():
    from fer.guards import RateLimiter

    rl = RateLimiter(per_minute=60, burst=2)  # one a second
    assert rl.check("a") == 0 and rl.check("a") == 0
    assert 0 < rl.check("a") <= 1
    assert rl.check("b") == 0  # per client
    rl.MAX_CLIENTS = 3
    for c in "cdef":
        rl.check(c)
    assert "a" not in rl.buckets and len(rl.buckets) == 3


# --- secrets --------------------------------------------------------------------------------------

SECRET_PATTERNS = {
    "private key": re.compile(r"-----BEGIN (RSA |EC |OPENSSH |DSA |PGP )?PRIVATE KEY"),
    "AWS access key": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\b(ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36}\b|\bgithub_pat_[A-Za-z0-9_]{40,}"),
    "Slack token": re.compile(r"\bxox[abpors]-[A-Za-z0-9-]{10,}"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"),
    "Neptune API token": re.compile(r"\beyJhcGlfYWRkcmVzcyI6[A-Za-z0-9+/=]{20,}"),  # base64 of {"api_address":
    "URL with credentials": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:[^/\s:@'\"$]{6,}@"),
    # key = value assignments of secret-looking names to literal values (env, YAML, INI, Python).
    "hard-coded secret": re.compile(
        r"(?i)\b[a-z0-9_]*(password|passwd|secret|secret_key|access_key|api_key|api_token|auth_token|admin_token)"
        r"\b[\"']?\s*[:=]\s*[\"']([^\"'\s$<{][^\"'\s]{7,})[\"']"
    ),
}
# Values the tests use on purpose: each is named so, and is useless outside a test.
ALLOWED = re.compile(r"test-only|example|placeholder|changeme|not-a-secret|x{8,}|\*{6,}")
NEVER_TRACKED = re.compile(r"(^|/)(\.env|clearml\.conf|.*\.pem|.*\.key|id_rsa.*|smtp_password|\.neptune/.*)$")


def tracked_files() -> list[str]:
    r = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    return r.stdout.splitlines()


def test_no_secret_files_are_tracked():
    files = tracked_files()
    assert "README.md" in files and ".env.example" in files  # the listing works
    assert not [f for f in files if NEVER_TRACKED.search(f)]


def test_no_secrets_in_tracked_files():
    findings = []
    for name in tracked_files():
        path = REPO / name
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue  # binary: model weights, images
        for kind, pattern in SECRET_PATTERNS.items():
            for m in pattern.finditer(text):
                if not ALLOWED.search(m.group(0)):
                    line = text.count("\n", 0, m.start()) + 1
                    findings.append(f"{name}:{line}: {kind}: {m.group(0)[:60]}")
    assert not findings, "possible secrets committed:\n" + "\n".join(findings)


# Planted secrets, split so that this file itself holds none for the scan to find.
@pytest.mark.parametrize(
    "parts",
    [
        ("pass", 'word: "hunter2hunter2"'),
        ("FER_ADMIN_TOK", "EN = 'a8f3k2m9q7w1e5r4'"),
        ("-----BEGIN RSA PRIV", "ATE KEY-----"),
        ("AKIA", "IOSFODNN7EXAMPL3"),
        ("https://user:s3cret", "pass@host/db"),
    ],
)
def test_the_scanner_catches_planted_secrets(parts):
    sample = "".join(parts)
    assert any(p.search(sample) and not ALLOWED.search(p.search(sample).group(0)) for p in SECRET_PATTERNS.values())
