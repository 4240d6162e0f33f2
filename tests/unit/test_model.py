"""Architectures, the artifact round trip and ONNX parity."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import require_module

torch = require_module("torch", "training (requirements.txt)")

from fer.inference import Predictor
from fer.model import ARCHITECTURES, PretrainedUnavailable, build_model, compact_onnx, load_model


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_forward_backward(arch):
    model = build_model(arch)
    x = torch.randn(4, 1, 48, 48, requires_grad=True)
    out = model(x)
    assert out.shape == (4, 7)
    out.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_unknown_arch():
    with pytest.raises(ValueError, match="unknown architecture 'vgg'; choose one of"):
        build_model("vgg")


def test_pretrained_fails_clearly_offline(tmp_path, monkeypatch):
    # No network here: the download fails and the message says what to do instead.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(PretrainedUnavailable, match="model.pretrained=false"):
        build_model("resnet18", pretrained=True)


def test_artifact_round_trip(trained_artifact):
    meta = json.loads((trained_artifact / "meta.json").read_text())
    for key in ("arch", "labels", "input_size", "normalize", "config", "metrics", "data", "code_version"):
        assert key in meta
    assert meta["labels"] == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert len(meta["data"]["sha256"]) == 64
    assert {"val_acc", "val_f1", "test_acc"} <= set(meta["metrics"])
    model, meta2 = load_model(trained_artifact)
    assert meta2.to_json() == meta  # the typed meta round-trips to the same JSON
    assert sum(p.numel() for p in model.parameters()) > 11_000_000


def test_onnx_matches_pytorch(trained_artifact):
    model, _ = load_model(trained_artifact)
    predictor = Predictor(trained_artifact)
    x = np.random.default_rng(0).integers(0, 256, size=(8, 48, 48), dtype=np.uint8)
    with torch.no_grad():
        expected = model(torch.from_numpy(predictor.preprocess(x))).numpy()
    got = predictor.logits(x)
    assert np.abs(got - expected).max() <= 1e-4


def test_compact_onnx_is_half_size_and_close(trained_artifact, tmp_path):
    out = compact_onnx(trained_artifact / "model.onnx", tmp_path / "model.onnx")
    (tmp_path / "meta.json").write_bytes((trained_artifact / "meta.json").read_bytes())
    assert out.stat().st_size < 0.55 * (trained_artifact / "model.onnx").stat().st_size
    x = np.random.default_rng(1).integers(0, 256, size=(16, 48, 48), dtype=np.uint8)
    full, half = Predictor(trained_artifact), Predictor(tmp_path)
    assert np.abs(full.logits(x) - half.logits(x)).max() < 1e-2


def test_code_version_names_the_commit_and_any_uncommitted_diff():
    import re

    from fer.model import code_state

    version, diff = code_state()
    assert re.fullmatch(r"[0-9a-f]{7,}(-dirty-[0-9a-f]{8})?", version), version
    assert ("-dirty-" in version) == bool(diff)  # a modified tree says so, with its diff's hash
