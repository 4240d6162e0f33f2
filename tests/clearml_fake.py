"""An in-memory stand-in for a ClearML server, at the SDK boundary (`clearml.Model`, `OutputModel`, `Task`).

No ClearML server can run here (it needs MongoDB and Elasticsearch). The stand-in behaves like the
server where the registry depends on it (newest-created first, tag queries, the published flag);
tests assert the exact SDK calls and arguments it records.
"""

from __future__ import annotations

import uuid


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


def install_fake_server(monkeypatch) -> FakeServer:
    """Replace the SDK's Model/OutputModel/Task entry points with a FakeServer; returns it."""
    import clearml

    srv = FakeServer()
    monkeypatch.setattr(clearml.Model, "query_models", staticmethod(srv.query_models))
    monkeypatch.setattr(clearml.Task, "current_task", staticmethod(lambda: None))
    monkeypatch.setattr(clearml.Task, "create", staticmethod(lambda **kw: ("task", kw)))

    class FakeOutputModel:
        def __init__(self, task, name, tags, framework, config_dict, label_enumeration):
            self.call = {
                "task": task,
                "name": name,
                "tags": tags,
                "framework": framework,
                "config_dict": config_dict,
                "label_enumeration": label_enumeration,
            }
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
