"""The ClearML registry backend, tested at the SDK boundary.

No ClearML server can run here (it needs MongoDB and Elasticsearch), so `clearml.Model`,
`clearml.OutputModel` and `clearml.Task` are replaced by a small in-memory stand-in that behaves
like the server where it matters (newest-created first, tag queries, published flag), and the
tests assert the exact SDK calls and arguments. Checked by hand against a real server: see README.
"""

from __future__ import annotations

import json
import uuid

import pytest

from fer.registry import CorruptModel, ModelNotFound, PromotionRefused, RegistryError, open_registry
from fer.registry_clearml import ClearMLRegistry


class FakeModel:
    def __init__(self, name, tags, config_dict, weights):
        self.id, self.name, self.tags, self.config_dict = uuid.uuid4().hex, name, list(tags), config_dict
        self.published, self.metadata, self.weights = False, {}, weights

    def get_metadata(self, key):
        return self.metadata.get(key)

    def set_metadata(self, key, value, v_type=None):
        self.metadata[key] = value
        return True

    def publish(self):
        self.published = True

    def get_local_copy(self, raise_on_error=False):
        return str(self.weights)


class FakeServer:
    def __init__(self):
        self.models: list[FakeModel] = []  # in creation order
        self.queries: list[dict] = []
        self.output_models: list[dict] = []

    def query_models(self, **kw):
        self.queries.append(kw)
        out = [m for m in self.models if kw["model_name"] in m.name]
        if kw.get("tags"):
            out = [m for m in out if set(kw["tags"]) & set(m.tags)]  # tags are OR-ed
        if kw.get("only_published"):
            out = [m for m in out if m.published]
        for k, v in (kw.get("metadata") or {}).items():
            out = [m for m in out if m.metadata.get(k) == v]
        return list(reversed(out))  # newest-created first, as the server orders them


@pytest.fixture
def server(monkeypatch, tmp_path):
    import clearml

    srv = FakeServer()
    monkeypatch.setattr(clearml.Model, "query_models", staticmethod(srv.query_models))
    monkeypatch.setattr(clearml.Task, "current_task", staticmethod(lambda: None))
    monkeypatch.setattr(clearml.Task, "create", staticmethod(lambda **kw: ("task", kw)))

    class FakeOutputModel:
        def __init__(self, task, name, tags, framework, config_dict, label_enumeration):
            self.call = {"task": task, "name": name, "tags": tags, "framework": framework,
                         "config_dict": config_dict, "label_enumeration": label_enumeration}
            srv.output_models.append(self.call)
            self.model = None

        def update_weights(self, weights_filename, auto_delete_file):
            self.call["weights"] = (weights_filename, auto_delete_file)
            self.model = FakeModel(self.call["name"], self.call["tags"], self.call["config_dict"], weights_filename)
            srv.models.append(self.model)

        def wait_for_uploads(self):
            self.call["waited"] = True

        def set_metadata(self, key, value, v_type=None):
            self.model.set_metadata(key, value, v_type)

        @property
        def id(self):
            return self.model.id

    monkeypatch.setattr(clearml, "OutputModel", FakeOutputModel)
    return srv


def artifact(tmp_path, val_acc, tag):
    d = tmp_path / f"art-{tag}"
    d.mkdir()
    (d / "model.onnx").write_bytes(f"onnx-{tag}".encode())
    (d / "meta.json").write_text(json.dumps({"labels": ["angry", "happy"], "arch": "resnet18_s2",
                                             "metrics": {"val_acc": val_acc}, "data": {"sha256": "d" * 64}}))
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
    monkeypatch.setenv("FER_REGISTRY", "clearml")
    assert isinstance(open_registry(tmp_path), ClearMLRegistry)
    monkeypatch.setenv("FER_REGISTRY", "auto")
    for var in ("CLEARML_API_HOST", "CLEARML_API_ACCESS_KEY", "CLEARML_API_SECRET_KEY"):
        monkeypatch.delenv(var, raising=False)
    assert not isinstance(open_registry(tmp_path), ClearMLRegistry)
    for var in ("CLEARML_API_HOST", "CLEARML_API_ACCESS_KEY", "CLEARML_API_SECRET_KEY"):
        monkeypatch.setenv(var, "x")
    assert isinstance(open_registry(tmp_path), ClearMLRegistry)
    monkeypatch.setenv("FER_REGISTRY", "s3")
    with pytest.raises(RegistryError, match="unknown registry backend"):
        open_registry(tmp_path)
