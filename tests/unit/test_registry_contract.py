"""One contract, every backend: what a caller may rely on from any `ModelRegistry`.

The local backend runs for real on a temporary folder. The ClearML backend runs against the
in-memory stand-in at the SDK boundary (`clearml_fake`), because no ClearML server can run here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clearml_fake import install_fake_server
from conftest import require_module

from fer.registry import CorruptModel, InvalidReference, LocalRegistry, ModelNotFound, PromotionRefused, RegistryError
from fer.registry.clearml_backend import ClearMLRegistry

NAME = "fer-test"


def artifact(root: Path, val_acc: float, tag: str) -> Path:
    d = root / f"art-{tag}"
    d.mkdir()
    (d / "model.onnx").write_bytes(f"onnx-{tag}".encode())
    (d / "meta.json").write_text(
        json.dumps(
            {
                "labels": ["angry", "happy"],
                "arch": "tiny",
                "normalize": {"mean": 0.5, "std": 0.25},
                "metrics": {"val_acc": val_acc, "test_acc": val_acc},
                "data": {"sha256": "d" * 64},
            }
        )
    )
    return d


@pytest.fixture(params=["local", "clearml"])
def reg(request, tmp_path, monkeypatch):
    if request.param == "local":
        return LocalRegistry(tmp_path / "registry")
    require_module("clearml", "the ClearML registry backend (requirements.txt)")
    install_fake_server(monkeypatch)
    return ClearMLRegistry(project="fer-contract", cache_dir=tmp_path / "cache")


def register(reg, tmp_path, *accuracies):
    return [reg.register(NAME, artifact(tmp_path, acc, f"{i}-{acc}")) for i, acc in enumerate(accuracies)]


def test_versions_count_up_and_carry_their_card(reg, tmp_path):
    v1, v2 = register(reg, tmp_path, 0.60, 0.65)
    assert (v1.version, v2.version) == (1, 2)
    for mv in (v1, v2):
        assert mv.card["arch"] == "tiny" and mv.card["labels"] == ["angry", "happy"]
        assert mv.card["data_sha256"] == "d" * 64 and len(mv.card["files"]["model.onnx"]) == 64
    assert [mv.version for mv in reg.list(NAME)] == [1, 2]
    assert reg.get(NAME, 2).metrics["val_acc"] == 0.65


def test_resolve_by_version_and_alias(reg, tmp_path):
    register(reg, tmp_path, 0.60, 0.65)
    with pytest.raises(ModelNotFound):
        reg.resolve(f"{NAME}@production")
    reg.promote(NAME, 1)
    prod = reg.resolve(f"{NAME}@production")
    assert prod.version == 1 and "production" in prod.aliases
    assert (prod.path / "model.onnx").read_bytes() == b"onnx-0-0.6"
    assert json.loads((prod.path / "meta.json").read_text())["metrics"]["val_acc"] == 0.60
    assert reg.resolve(NAME).version == 1  # a bare name means production
    assert reg.resolve(f"{NAME}@2").version == 2


def test_the_gate_refuses_a_worse_candidate_unless_forced(reg, tmp_path):
    register(reg, tmp_path, 0.65, 0.60)
    reg.promote(NAME, 1)
    with pytest.raises(PromotionRefused, match=r"val_acc 0.6000 is below fer-test@1's 0.6500.*--force"):
        reg.promote(NAME, 2)
    assert reg.resolve(f"{NAME}@production").version == 1
    assert reg.promote(NAME, 2, force=True).version == 2
    assert reg.resolve(f"{NAME}@production").version == 2


def test_rollback_walks_back_to_the_first_and_stops(reg, tmp_path):
    register(reg, tmp_path, 0.60, 0.61, 0.62)
    for version in (1, 2, 3):
        reg.promote(NAME, version)
    assert reg.rollback(NAME).version == 2
    assert reg.rollback(NAME).version == 1
    with pytest.raises(RegistryError, match="no earlier version"):
        reg.rollback(NAME)
    assert reg.resolve(f"{NAME}@production").version == 1


def test_bad_references_and_unknown_versions(reg, tmp_path):
    register(reg, tmp_path, 0.6)
    for ref in ("../etc@1", f"{NAME}@pro/duction", "@1"):
        with pytest.raises(InvalidReference):
            reg.resolve(ref)
    with pytest.raises(InvalidReference):
        reg.promote(NAME, 1, alias="../x")
    with pytest.raises(ModelNotFound, match="no version 9"):
        reg.resolve(f"{NAME}@9")


def test_an_artifact_that_cannot_serve_is_not_registered(reg, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.onnx").write_bytes(b"x")
    (bad / "meta.json").write_text(json.dumps({"labels": ["only-one"]}))
    with pytest.raises(CorruptModel, match="cannot register"):
        reg.register(NAME, bad)
    (bad / "meta.json").unlink()
    with pytest.raises(CorruptModel, match="meta.json is missing"):
        reg.register(NAME, bad)


def test_a_candidate_that_failed_its_model_tests_is_refused_unless_forced(reg, tmp_path):
    register(reg, tmp_path, 0.60, 0.70)
    reg.promote(NAME, 1)
    failed = {"passed": False, "failed": ["invariance/hflip", "slice/recall/fear"]}
    with pytest.raises(PromotionRefused, match=r"model tests failed \(invariance/hflip, slice/recall/fear"):
        reg.promote(NAME, 2, model_tests=failed)
    assert reg.resolve(f"{NAME}@production").version == 1
    assert reg.promote(NAME, 2, model_tests={"passed": True, "failed": []}).version == 2


def test_numbers_measured_side_by_side_decide_over_the_stored_ones(reg, tmp_path):
    # Stored: the candidate looks better (0.70 > 0.60). Measured on the same machine and data (the
    # pipeline's evaluate step), it is worse on validation: the measured numbers decide, and the
    # refusal shows the feedback hold-out too.
    register(reg, tmp_path, 0.60, 0.70, 0.50)
    reg.promote(NAME, 1)
    worse = {"candidate": {"val_acc": 0.58, "feedback_acc": 0.9},
             "baseline": {"ref": f"{NAME}@1", "val_acc": 0.61, "feedback_acc": 0.4}}  # fmt: skip
    with pytest.raises(PromotionRefused, match=r"feedback_acc 0.9000 vs 0.4000, val_acc 0.5800 vs 0.6100"):
        reg.promote(NAME, 2, evaluation=worse)
    assert reg.resolve(f"{NAME}@production").version == 1
    # Stored says worse (0.50), measured says better: promoted, and the report stays with it.
    better = {"candidate": {"val_acc": 0.62, "feedback_acc": 0.8},
              "baseline": {"ref": f"{NAME}@1", "val_acc": 0.61, "feedback_acc": 0.4}}  # fmt: skip
    assert reg.promote(NAME, 3, evaluation=better).version == 3
    if isinstance(reg, LocalRegistry):  # the ClearML backend keeps it in the model's metadata
        assert reg.history(NAME)[-1]["gate"]["summary"] == "feedback_acc 0.8000 vs 0.4000, val_acc 0.6200 vs 0.6100"
    # A comparison against some other version than the holder is not evidence: the stored gate runs.
    reg.promote(NAME, 2, force=True, reason="test")
    stale = better | {"baseline": better["baseline"] | {"ref": f"{NAME}@1"}}
    with pytest.raises(PromotionRefused, match=r"val_acc 0.5000 is below"):
        reg.promote(NAME, 3, evaluation=stale)
