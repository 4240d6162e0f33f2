"""The local registry: versions, aliases, the promotion gate, rollback, layering, atomicity."""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
from pathlib import Path

import pytest

from fer.registry import (
    CorruptModel,
    InvalidReference,
    LocalRegistry,
    ModelNotFound,
    PromotionRefused,
    RegistryError,
    parse_ref,
)


def make_artifact(root: Path, val_acc: float, tag: str = "a") -> Path:
    d = root / f"art-{tag}-{val_acc}"
    d.mkdir(parents=True)
    (d / "model.onnx").write_bytes(b"onnx-bytes-" + tag.encode())
    (d / "meta.json").write_text(
        json.dumps(
            {
                "labels": ["x", "y"],
                "metrics": {"val_acc": val_acc, "test_acc": val_acc},
                "data": {"sha256": "d" * 64},
                "arch": "resnet18",
                "normalize": {"mean": 0.5, "std": 0.25},
            }
        )
    )
    return d


@pytest.fixture
def reg(tmp_path):
    return LocalRegistry(tmp_path / "reg")


def test_register_list_promote_resolve(reg, tmp_path):
    v1 = reg.register("m", make_artifact(tmp_path, 0.60, "1"), source_run="runs/one")
    v2 = reg.register("m", make_artifact(tmp_path, 0.65, "2"))
    assert (v1.version, v2.version) == (1, 2)
    assert v1.card["source_run"] == "runs/one" and v1.card["metrics"]["val_acc"] == 0.60
    assert set(v1.card["files"]) == {"model.onnx", "meta.json"}
    with pytest.raises(ModelNotFound, match="no version tagged 'production'"):
        reg.resolve("m@production")
    reg.promote("m", 1)
    assert reg.resolve("m@production").version == 1
    assert reg.resolve("m").version == 1  # bare name means production
    assert reg.resolve("m@2").version == 2
    reg.promote("m", 2)
    assert [(v.version, v.aliases) for v in reg.list("m")] == [(1, []), (2, ["production"])]


def test_gate_refuses_worse_model_unless_forced(reg, tmp_path):
    reg.promote("m", reg.register("m", make_artifact(tmp_path, 0.65, "good")).version)
    worse = reg.register("m", make_artifact(tmp_path, 0.60, "worse"))
    with pytest.raises(PromotionRefused, match=r"val_acc 0.6000 is below m@1's 0.6500.*--force"):
        reg.promote("m", worse.version)
    assert reg.resolve("m@production").version == 1
    reg.promote("m", worse.version, force=True)
    assert reg.resolve("m@production").version == 2


def test_rollback_walks_back_without_ping_pong(reg, tmp_path):
    for i, acc in enumerate((0.60, 0.61, 0.62), start=1):
        reg.register("m", make_artifact(tmp_path, acc, str(i)))
        reg.promote("m", i)
    assert reg.rollback("m").version == 2
    assert reg.rollback("m").version == 1
    with pytest.raises(RegistryError, match="no earlier version"):
        reg.rollback("m")
    assert reg.resolve("m@production").version == 1


def test_other_aliases(reg, tmp_path):
    reg.register("m", make_artifact(tmp_path, 0.5))
    reg.promote("m", 1, alias="staging")
    assert reg.resolve("m@staging").version == 1
    with pytest.raises(InvalidReference):
        reg.promote("m", 1, alias="../x")


@pytest.mark.parametrize("ref", ["../etc@1", "a/b@1", "m@..", "m@pro/duction", "", "@1", ".hidden@1"])
def test_references_are_validated(ref):
    with pytest.raises(InvalidReference):
        parse_ref(ref)


def test_unknown_model_and_version(reg, tmp_path):
    with pytest.raises(ModelNotFound, match="no model named 'nope'"):
        reg.resolve("nope@production")
    reg.register("m", make_artifact(tmp_path, 0.5))
    with pytest.raises(ModelNotFound, match=r"no version 7 \(versions: 1\)"):
        reg.resolve("m@7")


def test_corrupt_and_missing_files_are_detected(reg, tmp_path):
    mv = reg.register("m", make_artifact(tmp_path, 0.5))
    (mv.path / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(CorruptModel, match="does not match its recorded checksum"):
        reg.resolve("m@1")
    (mv.path / "model.onnx").unlink()
    with pytest.raises(CorruptModel, match="model.onnx is missing"):
        reg.resolve("m@1")
    (mv.path / "card.json").write_text("{not json")
    with pytest.raises(CorruptModel, match="not valid JSON"):
        reg.get("m", 1)
    bad = tmp_path / "incomplete"
    bad.mkdir()
    (bad / "meta.json").write_text("{}")
    with pytest.raises(CorruptModel, match="model.onnx is missing"):
        reg.register("m", bad)


def test_corrupt_candidate_cannot_be_promoted(reg, tmp_path):
    reg.register("m", make_artifact(tmp_path, 0.5))
    mv = reg.register("m", make_artifact(tmp_path, 0.7, "b"))
    (mv.path / "model.onnx").write_bytes(b"garbage")
    with pytest.raises(CorruptModel):
        reg.promote("m", 2)


def test_layered_over_read_only_base(tmp_path):
    base = LocalRegistry(tmp_path / "shipped")
    base.register("m", make_artifact(tmp_path, 0.6, "ship"))
    base.promote("m", 1)
    before = {p: p.read_bytes() for p in (tmp_path / "shipped").rglob("*") if p.is_file()}
    reg = LocalRegistry(tmp_path / "user", base=tmp_path / "shipped")
    assert reg.resolve("m@production").version == 1
    v2 = reg.register("m", make_artifact(tmp_path, 0.7, "user"))
    assert v2.version == 2 and v2.path.is_relative_to(tmp_path / "user")
    reg.promote("m", 2)
    assert reg.resolve("m@production").version == 2
    assert reg.rollback("m").version == 1  # back to the shipped model
    after = {p: p.read_bytes() for p in (tmp_path / "shipped").rglob("*") if p.is_file()}
    assert after == before  # the shipped registry was never written


def _register_worker(args):
    root, art = args
    return LocalRegistry(root).register("m", Path(art)).version


def test_concurrent_registrations_get_distinct_versions(tmp_path):
    arts = [make_artifact(tmp_path, 0.5, str(i)) for i in range(8)]
    with mp.get_context("spawn").Pool(4) as pool:
        versions = pool.map(_register_worker, [(str(tmp_path / "reg"), str(a)) for a in arts])
    assert sorted(versions) == list(range(1, 9))
    reg = LocalRegistry(tmp_path / "reg")
    for mv in reg.list("m"):
        reg.verify(mv)  # every version complete
    assert not list((tmp_path / "reg" / "m").glob(".tmp-*"))  # no leftovers


def test_crash_mid_register_leaves_no_version(reg, tmp_path, monkeypatch):
    art = make_artifact(tmp_path, 0.5)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("fer.registry.local.os.rename", boom)
    with pytest.raises(RegistryError):
        reg.register("m", art)
    monkeypatch.undo()
    assert reg.list("m") == [] and not list((tmp_path / "reg" / "m").glob(".tmp-*"))


def test_alias_file_write_is_atomic(reg, tmp_path, monkeypatch):
    reg.register("m", make_artifact(tmp_path, 0.5))
    reg.register("m", make_artifact(tmp_path, 0.6, "b"))
    reg.promote("m", 1)

    def boom(*a, **k):
        raise OSError("killed")

    monkeypatch.setattr("fer.registry.local.os.replace", boom)
    with pytest.raises(OSError):
        reg.promote("m", 2)
    monkeypatch.undo()
    assert reg.resolve("m@production").version == 1  # old alias intact, file still valid JSON
    shutil.rmtree(tmp_path / "reg")


def test_a_forced_promotion_records_who_and_why(reg, tmp_path):
    import getpass

    reg.promote("m", reg.register("m", make_artifact(tmp_path, 0.65, "good")).version)
    worse = reg.register("m", make_artifact(tmp_path, 0.60, "worse"))
    reg.promote("m", worse.version, force=True, reason="int8 within 0.5 points; see the card")
    last = reg.history("m")[-1]
    assert last["to"] == worse.version and last["forced_by"] == getpass.getuser()
    assert last["reason"] == "int8 within 0.5 points; see the card"
    assert "forced_by" not in reg.history("m")[0]  # an ordinary promotion says nothing of the kind


def test_the_image_keeps_what_production_can_serve_or_roll_back_to(reg, tmp_path):
    # deploy/docker/prune_registry.py, which the Dockerfile's build stage runs on its copy of the
    # shipped registry: a member or training parent goes, and so does a version rolled back from;
    # production's other past versions and any version an alias names stay, and the pruned
    # registry still resolves and rolls back.
    from conftest import load_script

    prune_registry = load_script("deploy/docker/prune_registry.py")
    for i, acc in enumerate([0.60, 0.61, 0.62, 0.63, 0.64, 0.65], start=1):
        reg.register("m", make_artifact(tmp_path, acc, str(i)))
    reg.promote("m", 2)
    reg.promote("m", 4)
    reg.promote("m", 5, alias="shadow")
    reg.promote("m", 6)
    reg.rollback("m")  # 6 was production, then rolled back from: no rollback can reach it again
    gone = prune_registry.prune(reg.root)
    assert [(p.parent.parent.name, int(p.name)) for p in gone] == [("m", 1), ("m", 3), ("m", 6)]
    pruned = LocalRegistry(reg.root)
    assert [v.version for v in pruned.list("m")] == [2, 4, 5]
    assert pruned.resolve("m@production").version == 4
    assert pruned.rollback("m").version == 2


def test_files_written_atomically_get_the_umask_mode_not_owner_only(tmp_path):
    # mkstemp's files are 0600: before atomic_write chmodded them, a promotion made as root left
    # an aliases.json that the serving image (uid 10001) could not read, and /ready stayed 503.
    import os

    from fer.artifact import read_meta, write_meta

    old = os.umask(0o022)
    try:
        reg = LocalRegistry(tmp_path / "reg")
        mv = reg.register("fer-resnet18", make_artifact(tmp_path, 0.6))
        reg.promote("fer-resnet18", mv.version)
        aliases = tmp_path / "reg" / "fer-resnet18" / "aliases.json"
        assert json.loads(aliases.read_text()) == {"production": int(mv.version)}
        meta = write_meta(tmp_path / "art", read_meta(mv.path))
        for path in (aliases, meta):
            assert path.stat().st_mode & 0o777 == 0o644, path
        os.umask(0o077)  # an operator who wants owner-only files still gets them
        reg.promote("fer-resnet18", mv.version, alias="staging")
        assert aliases.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
    assert not list(aliases.parent.glob(".aliases.json.*"))  # no temporary file left behind
