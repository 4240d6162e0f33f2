"""The artifact schema: the shipped versions still load, writes round-trip, bad meta is refused."""

from __future__ import annotations

import json

import pytest
from conftest import REPO

from fer.artifact import SCHEMA_VERSION, ArtifactError, ArtifactMeta, check_files, read_meta, write_meta

SHIPPED = sorted((REPO / "models" / "registry" / "fer-resnet18" / "versions").iterdir())


@pytest.mark.parametrize("version_dir", SHIPPED, ids=lambda p: p.name)
def test_shipped_artifacts_load_unchanged(version_dir):
    raw = json.loads((version_dir / "meta.json").read_text())
    # Versions 1 and 2 predate the schema (version 1); version 3 was written with the policy (3);
    # a policy with zooms is schema 4 (versions 24 and 25), every other one still 3.
    expected = raw.get("schema_version", 1)
    zooms = bool(raw.get("policy", {}).get("zooms"))
    assert expected == (1 if int(version_dir.name) <= 2 else 4 if zooms else 3)
    meta = read_meta(version_dir)
    assert meta.schema_version == expected and len(meta.labels) == 7
    if meta.policy.members:  # versions 6, 9, 11, 18, 30 and 31: fused ensembles of registered networks
        assert meta.arch.startswith("ensemble of")
        if meta.policy.temperature == 1.0:  # a fused step registered before calibration (30 -> 31)
            parents = {json.loads((d / "meta.json").read_text()).get("calibration", {}).get("parent") for d in SHIPPED}
            assert f"fer-resnet18@{version_dir.name}" in parents
    else:
        assert meta.arch == "resnet18_s2"
        if expected == 1:
            assert meta.policy.views == 1 and meta.policy.temperature == 1.0  # old metas read as a plain pass
        if meta.policy.temperature != 1.0:  # versions 10, 14 and 17: a network calibrated alone on its own views
            assert meta.calibration["split"] == "val"  # fitted on PublicTest, never PrivateTest
    assert meta.normalize.std > 0 and 0 < meta.metrics["test_acc"] < 1
    check_files(version_dir)


def test_write_then_read_round_trips_and_keeps_extra_keys(tmp_path):
    meta = ArtifactMeta(
        arch="tiny",
        labels=["a", "b"],
        normalize={"mean": 0.5, "std": 0.25},
        metrics={"val_acc": 0.5, "best_epoch": 3, "note": "x"},
        future_field={"kept": True},
    )
    write_meta(tmp_path, meta)
    raw = json.loads((tmp_path / "meta.json").read_text())
    # Schema 3 unless the policy has zooms (test_policy.py): what an older fer reads stays the same.
    assert raw["schema_version"] == 3 < SCHEMA_VERSION and raw["future_field"] == {"kept": True}
    back = read_meta(tmp_path)
    assert back.to_json() == raw and back.numeric_metrics == {"val_acc": 0.5, "best_epoch": 3}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "meta.json is missing"),
        ("{not json", "not valid JSON"),
        ("[]", "expected a JSON object"),
        (json.dumps({"labels": ["a", "b"], "normalize": {"mean": 0.5, "std": 0.25}}), "arch: Field required"),
        (json.dumps({"arch": "x", "labels": ["a", "b"], "normalize": {"mean": 0.5, "std": 0}}), "normalize.std"),
        (json.dumps({"schema_version": 99, "arch": "x"}), "newer than this fer understands"),
    ],
)
def test_bad_meta_is_a_clear_error(tmp_path, content, message):
    if content is not None:
        (tmp_path / "meta.json").write_text(content)
    with pytest.raises(ArtifactError, match=message):
        read_meta(tmp_path)


def test_missing_model_file_is_named(tmp_path):
    (tmp_path / "meta.json").write_text("{}")
    with pytest.raises(ArtifactError, match="model.onnx is missing"):
        check_files(tmp_path)
