"""The ClearML registry backend, tested at the SDK boundary.

No ClearML server can run here (it needs MongoDB and Elasticsearch), so `clearml.Model`,
`clearml.OutputModel` and `clearml.Task` are replaced by a small in-memory stand-in that behaves
like the server where it matters (newest-created first, tag queries, published flag), and the
tests assert the exact SDK calls and arguments. Checked by hand against a real server: see README.
"""

from __future__ import annotations

import json

import pytest
from clearml_fake import install_fake_server
from conftest import require_module

require_module("clearml", "the ClearML registry backend (requirements.txt)")

from fer.registry import CorruptModel, ModelNotFound, PromotionRefused, RegistryError, open_registry
from fer.registry.clearml_backend import ClearMLRegistry


@pytest.fixture
def server(monkeypatch):
    return install_fake_server(monkeypatch)


def artifact(tmp_path, val_acc, tag):
    d = tmp_path / f"art-{tag}"
    d.mkdir()
    (d / "model.onnx").write_bytes(f"onnx-{tag}".encode())
    (d / "meta.json").write_text(
        json.dumps(
            {
                "labels": ["angry", "happy"],
                "arch": "resnet18_s2",
                "metrics": {"val_acc": val_acc},
                "data": {"sha256": "d" * 64},
                "normalize": {"mean": 0.5, "std": 0.25},
            }
        )
    )
    return d


def test_register_calls_output_model_with_everything(server, tmp_path):
    reg = ClearMLRegistry(project="fer-models", cache_dir=tmp_path / "cache")
    mv = reg.register("fer-resnet18", artifact(tmp_path, 0.66, "a"), source_run="runs/x")
    call = server.output_models[0]
    assert call["name"] == "fer-resnet18" and call["framework"] == "ONNX" and call["tags"] == ["v1"]
    assert call["label_enumeration"] == {"angry": 0, "happy": 1}
    assert call["config_dict"]["arch"] == "resnet18_s2"
    assert call["weights"][1] is False and call["waited"] is True  # never deletes the user's file
    assert call["task"][1]["project_name"] == "fer-models"
    model = server.models[0]
    assert model.metadata["fer_version"] == "1" and model.metadata["val_acc"] == "0.66"
    assert model.metadata["source_run"] == "runs/x" and len(model.metadata["onnx_sha256"]) == 64
    assert mv.version == 1 and not model.published
    assert all(q["project_name"] == "fer-models" and q["include_archived"] is False for q in server.queries)
    assert reg.register("fer-resnet18", artifact(tmp_path, 0.67, "b")).version == 2


def registry_with_versions(tmp_path, accuracies, promote=()):
    """A ClearML registry holding one version per val_acc, with `promote` promoted in order."""
    reg = ClearMLRegistry(cache_dir=tmp_path / "cache")
    for i, acc in enumerate(accuracies):
        reg.register("fer-resnet18", artifact(tmp_path, acc, str(i)))
    for version in promote:
        reg.promote("fer-resnet18", version)
    return reg


def test_promote_tags_publishes_and_untags_previous(server, tmp_path):
    reg = registry_with_versions(tmp_path, (0.60, 0.65, 0.70), promote=(1, 2))
    m1, m2, _ = server.models
    assert m2.published and "production" in m2.tags and "production" not in m1.tags
    # Resolve asks for published models with the tag and gets exactly one.
    mv = reg.resolve("fer-resnet18@production")
    q = server.queries[-1]
    assert q["tags"] == ["production"] and q["only_published"] is True and q["model_name"] == "fer-resnet18"
    assert mv.version == 2 and (mv.path / "model.onnx").read_bytes() == b"onnx-1"
    assert json.loads((mv.path / "meta.json").read_text())["metrics"]["val_acc"] == 0.65


def test_newest_created_is_not_mistaken_for_production(server, tmp_path):
    # query_models returns newest-created first: a newer, unpromoted version must not win.
    reg = ClearMLRegistry(cache_dir=tmp_path / "cache")
    reg.register("fer-resnet18", artifact(tmp_path, 0.70, "a"))
    reg.promote("fer-resnet18", 1)
    reg.register("fer-resnet18", artifact(tmp_path, 0.71, "b"))
    server.models[1].publish()
    assert reg.resolve("fer-resnet18@production").version == 1


def test_gate_and_rollback(server, tmp_path):
    reg = registry_with_versions(tmp_path, (0.60, 0.65, 0.62), promote=(1, 2))
    with pytest.raises(PromotionRefused, match="below fer-resnet18@2's 0.65"):
        reg.promote("fer-resnet18", 3)
    reg.promote("fer-resnet18", 3, force=True)
    assert reg.rollback("fer-resnet18").version == 2
    assert reg.rollback("fer-resnet18").version == 1
    with pytest.raises(RegistryError, match="no earlier version"):
        reg.rollback("fer-resnet18")
    holders = [m for m in server.models if "production" in m.tags]
    assert len(holders) == 1 and holders[0].metadata["fer_version"] == "1"


def test_resolve_errors(server, tmp_path):
    reg = ClearMLRegistry(cache_dir=tmp_path / "cache")
    with pytest.raises(ModelNotFound, match="no published version tagged 'production'"):
        reg.resolve("fer-resnet18@production")
    reg.register("fer-resnet18", artifact(tmp_path, 0.6, "a"))
    reg.promote("fer-resnet18", 1)
    (tmp_path / "art-a" / "model.onnx").write_bytes(b"tampered on the server")
    with pytest.raises(CorruptModel, match="does not match its recorded checksum"):
        reg.resolve("fer-resnet18@1")
    with pytest.raises(ModelNotFound, match="no version 9"):
        reg.resolve("fer-resnet18@9")


def test_backend_selection(monkeypatch, tmp_path):
    from fer.config import Settings

    # The environment is read once, into Settings, by an entry point; the factory takes them.
    monkeypatch.setenv("FER_REGISTRY", "clearml")
    assert isinstance(open_registry(tmp_path, Settings()), ClearMLRegistry)
    monkeypatch.setenv("FER_REGISTRY", "auto")
    for var in ("CLEARML_API_HOST", "CLEARML_API_ACCESS_KEY", "CLEARML_API_SECRET_KEY"):
        monkeypatch.delenv(var, raising=False)
    assert not isinstance(open_registry(tmp_path, Settings()), ClearMLRegistry)
    for var in ("CLEARML_API_HOST", "CLEARML_API_ACCESS_KEY", "CLEARML_API_SECRET_KEY"):
        monkeypatch.setenv(var, "x")
    assert isinstance(open_registry(tmp_path, Settings()), ClearMLRegistry)
    monkeypatch.setenv("FER_REGISTRY", "s3")
    with pytest.raises(RegistryError, match="unknown registry backend"):
        open_registry(tmp_path, Settings())


def test_an_unreachable_server_fails_fast(tmp_path, monkeypatch):
    from conftest import free_port

    from fer.clearml_session import ClearMLConnection

    # prepare_sdk sets these for the SDK; monkeypatch puts the test process's values back.
    monkeypatch.setenv("CLEARML_CACHE_DIR", str(tmp_path / "clearml"))
    monkeypatch.setenv("CLEARML_CONFIG_FILE", str(tmp_path / "none.conf"))
    conn = ClearMLConnection(api_host=f"http://127.0.0.1:{free_port()}", access_key="k", secret_key="s")
    with pytest.raises(RegistryError, match="does not answer"):
        ClearMLRegistry(cache_dir=tmp_path / "cache", connection=conn).list("fer-resnet18")


def test_a_forced_promotion_is_recorded_on_the_model(server, tmp_path):
    reg = registry_with_versions(tmp_path, (0.65, 0.60), promote=(1,))
    reg.promote("fer-resnet18", 2, force=True, reason="a test of the record")
    note = json.loads(server.models[1].metadata["forced_production"])
    assert note["reason"] == "a test of the record" and note["forced_by"]
