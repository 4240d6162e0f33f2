"""Behavioural model tests: the shipped model passes them, a broken candidate fails them and the
gate refuses it, and the golden set reports what changed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FERPLUS_CSV, REPO
from typer.testing import CliRunner

from fer.modeltests import PERTURBATIONS, _reorder, check, compare_golden, run_model_tests


def test_perturbations_keep_shape_and_change_pixels_a_little():
    x = np.random.default_rng(0).integers(0, 255, (6, 48, 48), dtype=np.uint8)
    for name, change in PERTURBATIONS.items():
        y = change(x)
        assert y.shape == x.shape and y.dtype == np.uint8, name
        base = x if name in ("hflip", "jpeg") else _reorder(x)
        diff = np.abs(y.astype(int) - base.astype(int)).mean()
        assert 0 < diff < 128, f"{name}: mean change {diff}"
    assert check("x", 0.1, 0.2, False)["passed"] and not check("x", 0.1, 0.2, True)["passed"]


def test_the_shipped_model_passes_and_matches_its_golden_answers(shipped_service, fer2013):
    ferplus = FERPLUS_CSV if FERPLUS_CSV.is_file() else None
    report = run_model_tests(shipped_service.predictor, fer2013["val"], ferplus)
    assert report["passed"], report["failed"]
    names = {c["name"].split("/")[0] for c in report["checks"]}
    assert {"invariance", "directional", "slice"} <= names
    golden = json.loads((REPO / "models" / "golden.json").read_text())
    assert golden["data_sha256"] == fer2013.checksum and len(golden["rows"]) == 300
    assert compare_golden(shipped_service.predictor, golden, fer2013["val"])["changed"] == 0


def test_a_broken_candidate_fails_and_the_gate_refuses_it(trained_artifact, fer2013, tmp_path):
    # A network trained for two epochs on synthetic blobs knows nothing about faces.
    from fer.inference import Predictor
    from fer.registry import LocalRegistry, PromotionRefused

    report = run_model_tests(Predictor(trained_artifact), fer2013["val"], limit=600)
    assert not report["passed"] and any(f.startswith("slice/recall/") for f in report["failed"])
    reg = LocalRegistry(tmp_path / "reg")
    v = reg.register("m", trained_artifact)
    with pytest.raises(PromotionRefused, match=r"model tests failed \(.*slice/recall/"):
        reg.promote("m", v.version, model_tests=report)
    assert reg.promote("m", v.version, model_tests=report, force=True).version == v.version


def test_fer_test_model_prints_the_report_and_its_verdict(fer2013_csv, tmp_path):
    from fer.cli import app

    out = tmp_path / "report.json"
    r = CliRunner().invoke(
        app,
        [
            "test-model",
            "fer-resnet18@production",
            "--data",
            str(fer2013_csv),
            "--golden",
            str(REPO / "models" / "golden.json"),
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "invariance/hflip" in r.output and "golden set: 0 of 300 answers differ" in r.output
    assert json.loads(out.read_text())["passed"] is True


def test_promote_with_data_measures_candidate_and_holder_side_by_side(fer2013_csv, tmp_path):
    # `fer registry promote --data` decides on numbers measured here, not on cards from other CPUs.
    import shutil

    from fer.cli import app
    from fer.registry import open_registry

    shutil.copytree(REPO / "models" / "registry", tmp_path / "reg")  # the shipped one stays untouched
    reg = open_registry(tmp_path / "reg")
    holder = reg.resolve("fer-resnet18@production")
    same = reg.register("fer-resnet18", holder.path, source_run="the production network again")
    r = CliRunner().invoke(
        app, ["registry", "promote", same.ref, "--registry", str(tmp_path / "reg"), "--data", str(fer2013_csv)]
    )
    assert r.exit_code == 0, r.output
    assert "model tests: passed" in r.output and f"vs {holder.ref}" in r.output
    gate = reg.history("fer-resnet18")[-1]["gate"]
    assert gate["measured"] and gate["baseline"]["ref"] == holder.ref
    assert gate["candidate"]["val_acc"] == gate["baseline"]["val_acc"]  # the same file, the same answers
    assert reg.resolve("fer-resnet18@production").version == same.version
