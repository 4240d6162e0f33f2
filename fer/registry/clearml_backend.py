"""The ClearML model registry backend: the same interface as `LocalRegistry`, on a ClearML server.

A version is a ClearML model named after the registered model, in `project`, whose metadata holds
`fer_version` (1, 2, ...), the gate metric and checksums, and whose config holds the artifact's
meta.json. An alias is a tag (`production`) on exactly one published model. Resolving downloads
the ONNX file once into a local cache, verified by checksum.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from fer.artifact import META_FILE, ONNX_FILE, ArtifactError, check_files, parse_meta, read_meta, write_meta
from fer.clearml_session import ClearMLConnection, ClearMLUnavailable
from fer.files import sha256_file
from fer.registry.base import (
    ALIAS_RE,
    GATE_METRIC,
    CorruptModel,
    InvalidReference,
    ModelNotFound,
    ModelVersion,
    RegistryError,
    as_metric,
    build_card,
    check_alias,
    check_name,
    gate,
    gate_measured,
    gate_model_tests,
    parse_ref,
)

log = logging.getLogger(__name__)
VERSION_TAG = re.compile(r"^v\d+$")


class ClearMLRegistry:
    """Model registry on a ClearML server (`FER_REGISTRY=clearml`, or ClearML credentials present).

    Args:
        project: ClearML project holding the models.
        cache_dir: where resolved models are downloaded (`<FER_CACHE>/clearml` from the factory).
    """

    def __init__(
        self, project: str = "fer", cache_dir: Path | str | None = None, connection: ClearMLConnection | None = None
    ):
        self.project = project
        self.cache_dir = Path(cache_dir or Path.home() / ".cache" / "fer" / "clearml")
        self.connection = connection or ClearMLConnection()
        self._checked = False

    # --- SDK access (the boundary the tests patch) ----------------------------------------------

    def _connect(self) -> None:
        """Once: prepare the SDK's config and check the server answers (seconds, not hours)."""
        if self._checked:
            return
        self.connection.prepare_sdk()
        if self.connection.online:
            try:
                self.connection.check_server()
            except ClearMLUnavailable as e:
                raise RegistryError(str(e)) from None
        self._checked = True

    def _query(
        self,
        name: str,
        tags: list[str] | None = None,
        only_published: bool = False,
        metadata: dict[str, str] | None = None,
    ) -> list[Any]:
        from clearml import Model

        self._connect()

        models = Model.query_models(
            project_name=self.project,
            model_name=name,
            tags=tags,
            only_published=only_published,
            include_archived=False,
            metadata=metadata,
        )
        # model_name matches by pattern on the server: keep exact names only.
        return [m for m in models if m.name == name]

    @staticmethod
    def _version_of(model) -> int:
        v = model.get_metadata("fer_version")
        if v is None or not str(v).isdigit():
            raise CorruptModel(f"ClearML model {model.id} has no fer_version metadata")
        return int(v)

    def _card(self, model) -> dict[str, Any]:
        try:
            meta = parse_meta(model.config_dict or {}, f"ClearML model {model.id}")
        except ArtifactError as e:
            raise CorruptModel(str(e)) from None
        card = build_card(
            model.name,
            meta,
            source_run=model.get_metadata("source_run"),
            tags=None,
            files={ONNX_FILE: model.get_metadata("onnx_sha256")},
            clearml_id=model.id,
        )
        card.pop("created"), card.pop("tags")  # the server records when; tags are the aliases
        return card

    def _mv(self, model, path: Path | None = None) -> ModelVersion:
        aliases = sorted(t for t in (model.tags or []) if ALIAS_RE.match(t) and not VERSION_TAG.match(t))
        return ModelVersion(
            model.name, self._version_of(model), path or Path(f"clearml://{model.id}"), self._card(model), aliases
        )

    # --- reading ---------------------------------------------------------------------------------

    def list(self, name: str | None = None) -> list[ModelVersion]:
        if name is None:
            raise InvalidReference("the ClearML registry lists one model name at a time")
        return sorted((self._mv(m) for m in self._query(check_name(name))), key=lambda mv: mv.version)

    def _model(self, name: str, target: int | str):
        if isinstance(target, int):
            found = self._query(name, metadata={"fer_version": str(target)})
            if not found:
                raise ModelNotFound(f"model {name!r} has no version {target} in ClearML project {self.project!r}")
            return found[0]
        found = self._query(name, tags=[target], only_published=True)
        if not found:
            raise ModelNotFound(
                f"model {name!r} has no published version tagged {target!r} in ClearML project {self.project!r}"
            )
        # query_models orders newest-created first; promotion keeps one holder, but be robust.
        return max(found, key=self._version_of)

    def get(self, name: str, version: int) -> ModelVersion:
        return self._mv(self._model(check_name(name), version))

    def resolve(self, ref: str, verify: bool = True) -> ModelVersion:
        """Resolve `name@alias` / `name@N` to a local copy (downloaded once, checksum-verified)."""
        name, target = parse_ref(ref)
        model = self._model(name, target)
        version = self._version_of(model)
        dest = self.cache_dir / model.id
        expected = model.get_metadata("onnx_sha256")
        onnx = dest / ONNX_FILE
        if not (onnx.is_file() and sha256_file(onnx) == expected and (dest / META_FILE).is_file()):
            local = model.get_local_copy(raise_on_error=True)
            dest.mkdir(parents=True, exist_ok=True)
            tmp = dest / ".model.onnx.tmp"
            shutil.copyfile(local, tmp)
            os.replace(tmp, onnx)
            write_meta(dest, parse_meta(model.config_dict or {}, f"ClearML model {model.id}"))
        if verify and expected and sha256_file(onnx) != expected:
            raise CorruptModel(f"{name}@{version}: downloaded model.onnx does not match its recorded checksum")
        return self._mv(model, dest)

    # --- writing ---------------------------------------------------------------------------------

    def register(
        self, name: str, artifact_dir: Path, *, source_run: str | None = None, tags: list[str] | None = None
    ) -> ModelVersion:
        from clearml import OutputModel, Task

        check_name(name)
        artifact_dir = Path(artifact_dir)
        onnx = artifact_dir / ONNX_FILE
        try:
            check_files(artifact_dir)
            meta = read_meta(artifact_dir)
        except ArtifactError as e:
            raise CorruptModel(f"cannot register {artifact_dir}: {e}") from None
        version = max((self._version_of(m) for m in self._query(name)), default=0) + 1
        task = Task.current_task() or Task.create(
            project_name=self.project, task_name=f"register {name}@{version}", task_type=Task.TaskTypes.custom
        )
        om = OutputModel(
            task=task,
            name=name,
            tags=[*(tags or []), f"v{version}"],
            framework="ONNX",
            config_dict=meta.to_json(),
            label_enumeration={lab: i for i, lab in enumerate(meta.labels)},
        )
        om.update_weights(weights_filename=str(onnx), auto_delete_file=False)
        om.wait_for_uploads()
        values = {
            "fer_version": str(version),
            "onnx_sha256": sha256_file(onnx),
            "source_run": source_run or "",
            GATE_METRIC: str(meta.metrics.get(GATE_METRIC, "")),
        }
        for key, value in values.items():
            om.set_metadata(key, value, v_type="str")
        log.info("registered %s@%d in ClearML project %s (model id %s)", name, version, self.project, om.id)
        return self.get(name, version)

    def promote(
        self,
        name: str,
        version: int,
        alias: str = "production",
        force: bool = False,
        _rollback: bool = False,
        model_tests: dict[str, Any] | None = None,
        reason: str | None = None,
        evaluation: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """Tag and publish `version` as `alias`, untagging the previous holder (refuses a worse model).

        With `evaluation` (see `gate_measured`) the side-by-side numbers decide and stay on the model.
        """
        check_alias(alias)
        if not force:
            gate_model_tests(name, version, alias, model_tests)
        candidate = self._model(check_name(name), version)
        holders = [m for m in self._query(name, tags=[alias]) if m.id != candidate.id]
        measured = None
        if holders and not force:
            current = max(holders, key=self._version_of)
            measured = evaluation and gate_measured(name, version, alias, self._version_of(current), evaluation)
            if measured is None:
                gate(
                    name,
                    version,
                    as_metric(candidate.get_metadata(GATE_METRIC)),
                    alias,
                    self._version_of(current),
                    as_metric(current.get_metadata(GATE_METRIC)),
                )
        if measured:
            candidate.set_metadata(f"gate_{alias}", json.dumps(measured), v_type="str")
        if force and not _rollback:  # who overrode the gate, and why, stays on the model
            note = json.dumps({"forced_by": getpass.getuser(), "reason": reason, "alias": alias})
            candidate.set_metadata(f"forced_{alias}", note, v_type="str")
        if not candidate.published:
            candidate.publish()
        candidate.tags = sorted({*candidate.tags, alias})
        if holders and not _rollback:
            # Remember who held the alias, for rollback (a rollback itself does not rewrite history).
            candidate.set_metadata(f"previous_{alias}", str(max(self._version_of(m) for m in holders)), v_type="str")
        for m in holders:  # newest-created first is not "current": untag every other holder
            m.tags = [t for t in m.tags if t != alias]
        return self._mv(candidate)

    def rollback(self, name: str, alias: str = "production") -> ModelVersion:
        current = self._model(check_name(name), alias)
        previous = current.get_metadata(f"previous_{alias}")
        if not previous or not str(previous).isdigit():
            raise RegistryError(f"cannot roll back {name!r} {alias!r}: no earlier version recorded")
        return self.promote(name, int(previous), alias, force=True, _rollback=True)
