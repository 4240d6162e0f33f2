"""Rebuilding a torch network from a served artifact's ONNX graph, the start of every fine-tune."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import PRODUCTION_VERSION, REPO, require_module

require_module("torch", "fine-tuning (requirements.txt)")

import onnxruntime as ort
import torch

from fer.artifact import ArtifactError, read_meta, write_meta
from fer.onnx_import import freeze_batchnorm, network_from_onnx, resolve_init
from fer.registry import open_registry

SHIPPED = REPO / "models" / "registry"


def onnx_logits(artifact, x):
    sess = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_the_shipped_fp32_network_is_rebuilt_exactly():
    artifact = SHIPPED / "fer-resnet18" / "versions" / "1"
    net, meta = network_from_onnx(artifact)
    x = np.random.default_rng(1).normal(size=(4, 1, 48, 48)).astype(np.float32)
    with torch.no_grad():
        got = net(torch.from_numpy(x)).numpy()
    ref = onnx_logits(artifact, x)
    assert meta.arch == "resnet18_s2" and np.abs(got - ref).max() < 1e-3
    assert got.argmax(1).tolist() == ref.argmax(1).tolist()


def test_production_resolves_to_the_fp32_parent_of_each_member_and_int8_itself_is_refused():
    from fer.onnx_import import resolve_starts

    reg = open_registry(SHIPPED)
    prod = reg.resolve("fer-resnet18@production")
    refs = read_meta(prod.path).policy.members or [prod.ref]  # an ensemble: one start per member
    starts, _ = resolve_starts("fer-resnet18@production", reg)
    assert len(starts) == len(refs)
    for ref, start in zip(refs, starts, strict=True):
        member = reg.resolve(ref)
        parent = (read_meta(member.path).quantization or {}).get("parent")
        assert parent, f"{ref} (in production {PRODUCTION_VERSION}) should record its fp32 parent"
        assert start == reg.resolve(parent).path == resolve_init(ref, reg)
        with pytest.raises(ArtifactError, match="int8 graph; fine-tune its fp32 parent"):
            network_from_onnx(member.path)
    if len(refs) > 1:
        with pytest.raises(ArtifactError, match="an ensemble graph"):
            network_from_onnx(prod.path)


def test_an_int8_parent_may_be_a_folder_and_a_missing_or_int8_parent_is_said_clearly(tmp_path):
    # `fer pipeline`'s quantize step records the fp32 run folder as the parent, not a reference;
    # fine-tuning such a version used to stop with "invalid name" from the registry.
    reg = open_registry(SHIPPED)
    fp32, int8 = tmp_path / "fp32", tmp_path / "int8"
    shutil.copytree(reg.resolve("fer-resnet18@22").path, fp32)
    shutil.copytree(reg.resolve("fer-resnet18@23").path, int8)
    meta = read_meta(int8)
    meta.quantization = meta.quantization | {"parent": str(fp32)}
    write_meta(int8, meta)
    assert resolve_init(str(int8), reg) == fp32
    shutil.rmtree(fp32)
    with pytest.raises(ArtifactError, match="is gone"):
        resolve_init(str(int8), reg)
    # Version 38 records itself as its parent (a scratch registry's number): said as such.
    with pytest.raises(ArtifactError, match="is an int8 graph too"):
        resolve_init("fer-resnet18@38", reg)


def test_a_trained_artifact_round_trips_and_a_wrong_architecture_is_refused(trained_artifact, tmp_path):
    net, _ = network_from_onnx(trained_artifact)
    x = np.random.default_rng(2).normal(size=(3, 1, 48, 48)).astype(np.float32)
    with torch.no_grad():
        assert np.abs(net(torch.from_numpy(x)).numpy() - onnx_logits(trained_artifact, x)).max() < 1e-4
    wrong = tmp_path / "wrong"
    shutil.copytree(trained_artifact, wrong)
    meta = read_meta(wrong)
    write_meta(wrong, meta.model_copy(update={"arch": "tiny"}))
    with pytest.raises(ArtifactError, match="Conv/Gemm nodes but tiny has"):
        network_from_onnx(wrong)
    (wrong / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="no model.onnx"):
        network_from_onnx(wrong)


def test_frozen_batchnorm_keeps_the_folded_statistics_while_weights_learn(trained_artifact):
    net, _ = network_from_onnx(trained_artifact)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [(b.running_mean.clone(), b.running_var.clone()) for b in bns]
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d)).weight.detach().clone()
    net.train()
    assert len(freeze_batchnorm(net)) == len(bns) > 0
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    loss = net(torch.randn(8, 1, 48, 48)).logsumexp(1).mean()
    loss.backward()
    opt.step()
    for b, (mean, var) in zip(bns, before, strict=True):
        assert torch.equal(b.running_mean, mean) and torch.equal(b.running_var, var)
    assert not torch.equal(next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d)).weight, conv)


def test_fer_train_init_fine_tunes_from_the_registry_and_records_its_parent(trained_artifact, session_csv, tmp_path):
    from typer.testing import CliRunner

    from fer.cli import app

    reg = open_registry(tmp_path / "reg")
    mv = reg.register("ft", trained_artifact)
    sets = ["epochs=1", "batch_size=32", "eval_batch_size=64", "model.arch=resnet18", "precision=fp32",
            "optim.lr=1e-9", "optim.weight_decay=0", "optim.scheduler=none"]  # fmt: skip
    args = ["train", "--data", str(session_csv), "--init", mv.ref, "--registry", str(tmp_path / "reg"),
            "--run-dir", str(tmp_path / "run"), "--tracker", "none"]  # fmt: skip
    r = CliRunner().invoke(app, [*args, *[a for s in sets for a in ("--set", s)]], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    out = tmp_path / "run" / "artifact"
    meta = read_meta(out)
    assert meta.fine_tuned_from["artifact"] == str(mv.path.resolve())
    assert meta.normalize == read_meta(trained_artifact).normalize  # the parent's, not recomputed
    # A learning rate of ~0 leaves the parent's answers: the start point is the parent's network.
    x = np.random.default_rng(3).normal(size=(6, 1, 48, 48)).astype(np.float32)
    assert np.abs(onnx_logits(out, x) - onnx_logits(trained_artifact, x)).max() < 1e-3
    bad = CliRunner().invoke(app, [*args, "--set", "model.arch=tiny", "--set", "epochs=1"])
    assert bad.exit_code != 0 and "is a resnet18, but the config trains tiny" in bad.output
