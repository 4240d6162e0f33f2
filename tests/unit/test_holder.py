"""The model holder without HTTP: load, unchanged reload, swap on promotion, refusal, no model."""

from __future__ import annotations

import asyncio
import shutil

import pytest
from conftest import PRODUCTION_VERSION

from fer.config import Settings
from fer.metrics import Metrics
from fer.registry import open_registry
from fer.serving.holder import ModelHolder, ModelRefused


@pytest.fixture
def registry(tmp_path):
    """A user registry over the shipped one, with a copy of the production model as the next version."""
    reg = open_registry(tmp_path / "registry")
    copy = tmp_path / "copy"
    shutil.copytree(reg.resolve("fer-resnet18@production").path, copy)
    (copy / "card.json").unlink()
    return reg, reg.register("fer-resnet18", copy, source_run="test")


def holder_for(tmp_path, **kw) -> ModelHolder:
    return ModelHolder(Settings(registry_dir=str(tmp_path / "registry"), **kw), Metrics())


def ready(h: ModelHolder) -> float | None:
    return h.metrics.registry.get_sample_value("fer_model_ready")


def test_start_loads_production_and_reload_is_a_no_op(tmp_path, registry):
    h = holder_for(tmp_path)
    asyncio.run(h.start())
    assert h.ref == f"fer-resnet18@{PRODUCTION_VERSION}" and ready(h) == 1
    assert asyncio.run(h.reload())["status"] == "unchanged"


def test_promotion_is_swapped_in_and_forced_reload_rebuilds(tmp_path, registry):
    reg, v2 = registry
    h = holder_for(tmp_path)
    asyncio.run(h.start())
    first = h.service
    reg.promote("fer-resnet18", v2.version, force=True)
    assert asyncio.run(h.reload()) == {
        "status": "reloaded",
        "model": {"name": "fer-resnet18", "version": str(v2.version)},
    }
    assert h.service is not first and h.ref == f"fer-resnet18@{v2.version}"
    again = h.service
    assert asyncio.run(h.reload(force=True))["status"] == "reloaded" and h.service is not again


def test_a_corrupt_model_is_refused_and_the_old_one_keeps_serving(tmp_path, registry):
    _, v2 = registry
    h = holder_for(tmp_path)
    asyncio.run(h.start())
    serving = h.service
    (v2.path / "model.onnx").write_bytes(b"not onnx")
    # Promotion itself verifies checksums, so point the holder at the broken version directly.
    h.settings = h.settings.model_copy(update={"model": f"fer-resnet18@{v2.version}"})
    with pytest.raises(ModelRefused, match="does not match its recorded checksum"):
        asyncio.run(h.reload())
    assert h.service is serving
    assert h.metrics.registry.get_sample_value("fer_model_load_failures_total") == 1


def test_no_model_leaves_the_holder_empty_and_not_ready(tmp_path):
    h = holder_for(tmp_path, model="no-such-model@production")
    asyncio.run(h.start())
    assert h.service is None and h.ref == "nothing" and ready(h) == 0
