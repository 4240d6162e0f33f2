"""The shipped production model: registered, intact, read-only, and as accurate as documented."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from conftest import FERPLUS_CSV, REPO

from fer.artifact import read_meta
from fer.evaluate import evaluate_split
from fer.registry import LocalRegistry, open_registry

SHIPPED = REPO / "models" / "registry"
TARGET = 0.70  # PrivateTest accuracy as served (the production policy; issue #14 asks 0.715)


def _tree_digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


def test_shipped_model_is_registered_and_intact():
    reg = LocalRegistry(SHIPPED)
    mv = reg.resolve("fer-resnet18@production")  # verifies every file's checksum
    assert mv.aliases == ["production"]
    assert {"model.onnx", "meta.json", "card.json"} <= {p.name for p in mv.path.iterdir()}
    # int8 weights: 11.3 MB per ResNet-18, one per network fused into the graph.
    networks = max(1, len(read_meta(mv.path).policy.members))
    assert (mv.path / "model.onnx").stat().st_size < networks * 12 * 1024 * 1024
    assert mv.card["data_sha256"] and mv.card["metrics"]["test_acc"] >= TARGET


def test_user_registry_never_writes_the_shipped_one(tmp_path):
    before = _tree_digest(SHIPPED)
    reg = open_registry(tmp_path / "user")
    shipped = reg.resolve("fer-resnet18@production")
    new = reg.register("fer-resnet18", shipped.path)
    reg.promote("fer-resnet18", new.version)
    assert reg.resolve("fer-resnet18@production").version == new.version
    reg.rollback("fer-resnet18")
    assert reg.resolve("fer-resnet18@production").version == shipped.version
    assert _tree_digest(SHIPPED) == before


@pytest.mark.data
@pytest.mark.model
def test_private_test_accuracy_meets_target(shipped_service, fer2013):
    ferplus = FERPLUS_CSV if FERPLUS_CSV.is_file() else None
    m = evaluate_split(shipped_service.predictor, fer2013["test"], ferplus=ferplus)
    assert m["n"] == 3589
    assert m["accuracy"] >= TARGET, f"PrivateTest accuracy {m['accuracy']:.4f} < {TARGET}"
    # The number in the model's card is the one this test measures (fp16 storage moves it < 0.3 pt).
    assert abs(m["accuracy"] - shipped_service.predictor.meta.metrics["test_acc"]) < 0.003
    assert m["macro_f1"] > 0.6
    if "ferplus" in m:
        # The model agrees with the FER+ majority of ten annotators more often than FER-2013's
        # own labels do (65.6%): it learnt the expressions, not the one label's noise. (v18 agrees
        # with FER-2013 itself more than with FER+; v3-v11 were the other way round.)
        assert m["ferplus"]["accuracy"] > m["ferplus"]["agreement_fer2013_vs_ferplus"] + 0.02


@pytest.mark.data
@pytest.mark.model
def test_flip_invariance(shipped_service, fer2013):
    # Behavioural: a mirrored face has the same expression.
    x = fer2013["test"].x[:1000]
    p = shipped_service.predictor.predict_proba(x).argmax(1)
    q = shipped_service.predictor.predict_proba(np.ascontiguousarray(x[:, :, ::-1])).argmax(1)
    assert (p == q).mean() > 0.85


@pytest.mark.data
@pytest.mark.model
def test_small_brightness_change_is_harmless(shipped_service, fer2013):
    x = fer2013["test"].x[:1000]
    brighter = np.clip(x.astype(np.int16) + 10, 0, 255).astype(np.uint8)
    p = shipped_service.predictor.predict_proba(x).argmax(1)
    q = shipped_service.predictor.predict_proba(brighter).argmax(1)
    assert (p == q).mean() > 0.9


@pytest.mark.data
@pytest.mark.model
def test_the_shipped_temperature_lowers_nll_and_ece_stays_under_3_percent(shipped_service, fer2013):
    # Calibrated confidence is part of what ships: a temperature fitted on PublicTest, in the policy.
    from fer.evaluate import classification_metrics
    from fer.policy import combine, nll

    predictor = shipped_service.predictor
    policy = predictor.policy
    assert policy.temperature != 1.0 and predictor.meta.calibration["split"] == "val"
    val = fer2013["val"]
    logits = predictor.view_logits(val.x, policy)
    raw, calibrated = combine(logits, 1.0), combine(logits, policy.temperature)
    # The fit minimises PublicTest NLL; ECE (15 bins) is the bar, on both held-out splits.
    assert nll(calibrated, val.y) < nll(raw, val.y)
    assert classification_metrics(val.y, calibrated, predictor.labels)["ece"] <= 0.03
    test = fer2013["test"]
    assert evaluate_split(predictor, test)["ece"] <= 0.03


def test_every_shipped_ensemble_is_the_average_of_its_registered_members():
    # A fused graph is nothing but its members, each of which stays registered (and fine-tunable).
    # Every ensemble ever shipped (versions 6, 9, 11, 18, 31) stays a rollback target, so each is checked.
    from fer.ensemble import VIEW_KEYS, _views_inside
    from fer.inference import Predictor
    from fer.policy import softmax

    reg = LocalRegistry(SHIPPED)
    ensembles = [mv for mv in reg.list("fer-resnet18") if len(read_meta(mv.path).policy.members) >= 2]
    assert len(ensembles) >= 4, [mv.ref for mv in ensembles]
    # Each member counts as its own policy runs it alone (a crop-40 member on its centre window, or
    # its five windows; its own temperature); the ensemble's temperature applies on top of the average.
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (8, 48, 48), dtype=np.uint8)
    ramps = np.linspace(0, 255, 48)[None, None, :] * rng.uniform(0.2, 1, (8, 1, 1))  # smooth images too
    faces = np.concatenate([noise, np.broadcast_to(ramps, (8, 48, 48)).astype(np.uint8)])
    for mv in ensembles:
        ensemble = Predictor(mv.path, threads=1)
        members = [Predictor(reg.resolve(ref).path, threads=1) for ref in ensemble.policy.members]
        if _views_inside([m.meta for m in members]):  # each member's views are cut inside the graph
            fused = softmax(ensemble.logits(faces))
        else:  # the views the members share are made outside the graph (v30, v31), once for all
            shared = {**members[0].policy.model_dump(include=VIEW_KEYS), "temperature": 1.0}
            fused = ensemble.predict_proba(faces, policy=ensemble.policy.model_copy(update=shared))
        expected = np.mean([m.predict_proba(faces) for m in members], axis=0)
        np.testing.assert_allclose(fused, expected, atol=1e-4, err_msg=mv.ref)
