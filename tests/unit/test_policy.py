"""The test-time policy (views, temperature, fused ensembles) and the one code path that runs it.

Real tiny networks trained on synthetic faces, real ONNX exports and real ONNX Runtime sessions;
the data-gated parity of `fer evaluate` and `/predict` on FER-2013 lives in test_api.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import require_module

from fer.artifact import ArtifactError, EarlyExit, Normalize, Policy, read_meta, write_meta
from fer.evaluate import classification_metrics
from fer.policy import combine, fit_temperature, nll, softmax, views, zoom_matrix

require_module("torch", "training tiny networks (requirements.txt)")


def _fit(csv, run_dir, seed: int, crop: int = 0):
    from fer.config import load_train_config
    from fer.train import fit

    sets = ["epochs=2", "batch_size=32", "precision=fp32", "model.arch=tiny", f"seed={seed}", f"augment.crop={crop}"]
    return fit(load_train_config(None, sets), data_path=str(csv), run_dir=run_dir).artifact_dir


@pytest.fixture(scope="module")
def members(tmp_path_factory, session_csv):
    root = tmp_path_factory.mktemp("members")
    # 32 px crops: the tiny net's 4x4 pooling grid needs a side that halves twice into a multiple of 4.
    return [_fit(session_csv, root / f"m{s}", seed=s, crop=32) for s in (1, 2)]


def test_views_are_the_centre_corners_and_mirrors():
    faces = np.arange(2 * 48 * 48, dtype=np.uint8).reshape(2, 48, 48)
    v = views(faces, Policy(crop=40, crops="five", flip=True))
    assert v.shape == (10, 2, 40, 40) and Policy(crop=40, crops="five", flip=True).views == 10
    assert np.array_equal(v[0], faces[:, 4:44, 4:44])  # centre first
    assert np.array_equal(v[4], faces[:, 8:, 8:])  # bottom-right corner
    assert np.array_equal(v[5], faces[:, 4:44, 4:44][:, :, ::-1])  # then the mirrors, in order
    assert views(faces, Policy()).shape == (1, 2, 48, 48)


def test_zoomed_views_follow_each_window_then_all_are_mirrored():
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 255, (3, 48, 48), dtype=np.uint8)
    policy = Policy(zooms=[1.25, 0.8], flip=True)
    v = views(faces, policy)
    assert v.shape == (6, 3, 48, 48) and policy.views == 6 and v.dtype == np.float32
    assert np.array_equal(v[0], faces)  # the window itself first, unchanged
    # Zoom in by 1.25: output pixel i samples source (i + 0.5 - 24) / 1.25 + 23.5; pixel 4 -> 7.1.
    y, x = 4 + 0.5, 10 + 0.5
    sy, sx = (y - 24) / 1.25 + 23.5, (x - 24) / 1.25 + 23.5
    y0, x0 = int(sy), int(sx)
    wy, wx = sy - y0, sx - x0
    f = faces[1].astype(np.float64)
    top, bottom = (1 - wx) * f[y0, x0] + wx * f[y0, x0 + 1], (1 - wx) * f[y0 + 1, x0] + wx * f[y0 + 1, x0 + 1]
    bilinear = (1 - wy) * top + wy * bottom
    assert v[1, 1, 4, 10] == pytest.approx(bilinear, abs=1e-3)
    # Zoom out by 0.8: the border repeats past the edge, and a flat face stays flat.
    flat = np.full((1, 48, 48), 77, np.uint8)
    assert np.allclose(views(flat, Policy(zooms=[0.8])), 77, atol=1e-4)
    assert np.allclose(zoom_matrix(40, 0.8).sum(1), 1) and np.allclose(zoom_matrix(40, 1.3).sum(1), 1)
    assert np.array_equal(v[3], v[0][:, :, ::-1]) and np.allclose(v[5], v[2][:, :, ::-1])  # mirrors last
    five = Policy(crop=32, crops="five", zooms=[1.1])
    assert views(faces, five).shape == (10, 3, 32, 32) and five.views == 10
    with pytest.raises(ValueError, match="zoom"):
        Policy(zooms=[1.0])


def test_policy_round_trips_through_the_artifact(members, tmp_path):
    meta = read_meta(members[0])
    assert meta.policy == Policy(crop=32)  # trained on random crops: served on the centre crop
    meta.policy = Policy(crop=32, crops="five", flip=True, temperature=1.7, members=["a@1", "b@2"])
    write_meta(tmp_path, meta)
    assert read_meta(tmp_path).policy == meta.policy
    # Zooms need schema 4 (a fer that predates them must refuse, not serve without); other
    # policies are still written as schema 3, which every earlier fer since the policy reads.
    assert json.loads((tmp_path / "meta.json").read_text())["schema_version"] == 3
    meta.policy = Policy(zooms=[1.0833, 0.9167], flip=True, temperature=1.1)
    write_meta(tmp_path, meta)
    raw = json.loads((tmp_path / "meta.json").read_text())
    assert raw["schema_version"] == 4 and raw["policy"]["zooms"] == [1.0833, 0.9167]
    assert read_meta(tmp_path).policy == meta.policy
    bad = meta.to_json() | {"policy": {"crops": "ten"}}
    (tmp_path / "meta.json").write_text(__import__("json").dumps(bad))
    with pytest.raises(ArtifactError, match="policy.crops"):
        read_meta(tmp_path)


def test_predictor_runs_the_policy_it_is_given(members):
    from fer.inference import Predictor

    p = Predictor(members[0])
    x = np.random.default_rng(0).integers(0, 255, (6, 48, 48), dtype=np.uint8)
    policy = Policy(crop=32, crops="five", flip=True, temperature=2.0)
    by_hand = np.mean([softmax(p.logits(v) / 2.0) for v in views(x, policy)], axis=0)
    assert np.allclose(p.predict_proba(x, policy=policy), by_hand, atol=1e-6)
    assert np.allclose(p.predict_proba(x, policy=policy, batch_size=4), by_hand, atol=1e-6)
    # The artifact's own policy (centre crop) is the default, for serving and `fer evaluate` alike.
    assert np.allclose(p.predict_proba(x), softmax(p.logits(np.ascontiguousarray(x[:, 8:40, 8:40]))), atol=1e-6)


def test_fitted_temperature_recovers_a_known_overconfidence():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1.5, (4000, 7))
    y = np.array([rng.choice(7, p=p) for p in softmax(z)])  # labels drawn from softmax(z): T=1 is calibrated
    overconfident = (3.0 * z)[None]  # the network's logits: three times too sharp
    t = fit_temperature(overconfident, y)
    assert t == pytest.approx(3.0, rel=0.1)
    before = classification_metrics(y, combine(overconfident, 1.0), list("abcdefg"))["ece"]
    after = classification_metrics(y, combine(overconfident, t), list("abcdefg"))["ece"]
    assert after < before / 3 and nll(combine(overconfident, t), y) < nll(combine(overconfident, 1.0), y)


def test_calibrate_writes_the_temperature_and_measures_through_it(members, session_csv, tmp_path):
    from fer.calibrate import calibrate_artifact
    from fer.data import load_dataset
    from fer.evaluate import evaluate_split
    from fer.inference import Predictor

    ds = load_dataset(session_csv)
    r = calibrate_artifact(members[0], tmp_path / "cal", ds, "tiny@1", Policy(crop=32, flip=True))
    meta = read_meta(tmp_path / "cal")
    assert meta.policy.temperature == pytest.approx(r["temperature"]) and meta.policy.flip
    assert r["val_nll_after"] <= r["val_nll_before"] + 1e-9  # the fit can only lower the NLL it minimises
    served = evaluate_split(Predictor(tmp_path / "cal"), ds["test"])
    assert meta.metrics["test_acc"] == pytest.approx(served["accuracy"])
    assert meta.metrics_measured["parent_tiny@1"]["val_acc"] == read_meta(members[0]).metrics["val_acc"]


def test_fused_ensemble_is_the_average_of_its_members(members, tmp_path):
    from fer.ensemble import fuse
    from fer.inference import Predictor

    # A member with another normalisation: the graph maps its input to each member's own.
    write_meta(members[1], read_meta(members[1]).model_copy(update={"normalize": Normalize(mean=0.3, std=0.2)}))
    fuse(members, tmp_path / "ens", refs=["tiny@1", "tiny@2"])
    ens = Predictor(tmp_path / "ens")
    assert ens.policy.members == ["tiny@1", "tiny@2"] and ens.policy.crop == 32
    x = np.random.default_rng(1).integers(0, 255, (9, 48, 48), dtype=np.uint8)
    expected = np.mean([Predictor(m).predict_proba(x) for m in members], axis=0)
    assert np.abs(ens.predict_proba(x) - expected).max() <= 1e-4


@pytest.fixture(scope="module")
def whole(tmp_path_factory, session_csv):
    return _fit(session_csv, tmp_path_factory.mktemp("whole") / "run", seed=3)


def _as(net, policy: Policy, dest):
    """An artifact of `net`'s network run under `policy`."""
    dest.mkdir()
    (dest / "model.onnx").write_bytes((net / "model.onnx").read_bytes())
    write_meta(dest, read_meta(net).model_copy(update={"policy": policy}))
    return dest


# (first member, second member): "whole" is a network trained on the 48 px face, "crop" one
# trained on 32 px crops. Whenever the two make different views, the graph cuts each member's own.
PAIRS = {
    "whole+centre": (("whole", Policy()), ("crop", Policy(crop=32))),
    "whole+five": (("whole", Policy()), ("crop", Policy(crop=32, crops="five"))),
    "whole+five-flip": (("whole", Policy()), ("crop", Policy(crop=32, crops="five", flip=True))),
    "whole-flip+centre-flip": (("whole", Policy(flip=True)), ("crop", Policy(crop=32, flip=True, temperature=1.3))),
    "centre+whole": (("crop", Policy(crop=32)), ("whole", Policy())),
    "centre+centre-flip": (("crop", Policy(crop=32)), ("crop", Policy(crop=32, flip=True))),
    "whole-zooms-flip+centre-flip": (
        ("whole", Policy(zooms=[1.0833, 0.9167], flip=True)),
        ("crop", Policy(crop=32, flip=True)),
    ),
    "five-zoom+whole": (("crop", Policy(crop=32, crops="five", zooms=[1.2])), ("whole", Policy())),
}


@pytest.mark.parametrize("pair", PAIRS.values(), ids=PAIRS.keys())
def test_members_with_different_views_have_them_cut_inside_the_graph(members, whole, pair, tmp_path):
    from fer.ensemble import fuse
    from fer.inference import Predictor

    nets = {"whole": whole, "crop": members[0]}
    arts = [_as(nets[net], policy, tmp_path / f"m{i}") for i, (net, policy) in enumerate(pair)]
    fuse(arts, tmp_path / "mixed", refs=["a@1", "b@1"])
    ens = Predictor(tmp_path / "mixed")
    # The fused graph takes the whole face once; every view is made inside it.
    assert ens.policy.crop == 0 and not ens.policy.flip and ens.policy.views == 1
    assert ens.policy.members == ["a@1", "b@1"]
    x = np.random.default_rng(2).integers(0, 255, (9, 48, 48), dtype=np.uint8)
    alone = [Predictor(a).predict_proba(x) for a in arts]
    assert np.abs(alone[0] - alone[1]).max() > 1e-3  # two different answers, not one twice
    for a, (net, policy) in zip(alone, pair, strict=True):
        if policy.views > 1:  # the extra views change the member's answer: they are really there
            plain = Predictor(nets[net]).predict_proba(x, policy=Policy(crop=policy.crop))
            assert np.abs(a - plain).max() > 1e-3
    assert np.abs(ens.predict_proba(x) - np.mean(alone, axis=0)).max() <= 1e-4


def test_fusing_refuses_members_that_disagree(members, whole, tmp_path):
    from fer.ensemble import fuse

    with pytest.raises(ArtifactError, match="at least two"):
        fuse(members[:1], tmp_path / "one")
    odd = _as(members[1], read_meta(members[1]).policy, tmp_path / "odd")
    write_meta(odd, read_meta(odd).model_copy(update={"labels": list(reversed(read_meta(odd).labels))}))
    with pytest.raises(ArtifactError, match="labels differs"):
        fuse([members[0], odd], tmp_path / "bad")


def test_calibrate_command_sets_zooms_and_refuses_a_bad_one(whole, session_csv, tmp_path):
    from typer.testing import CliRunner

    from fer.cli import app
    from fer.registry import open_registry

    open_registry(tmp_path / "reg").register("tiny", whole)
    args = ["calibrate", "--model", "tiny@1", "--registry", str(tmp_path / "reg"), "--data", str(session_csv)]
    r = CliRunner().invoke(app, [*args, "--flip", "--zoom", "1.1", "--zoom", "0.9", "--out", str(tmp_path / "z")])
    assert r.exit_code == 0, r.output
    policy = read_meta(tmp_path / "z").policy
    assert policy.zooms == [1.1, 0.9] and policy.flip and policy.views == 6 and policy.temperature != 1.0
    r = CliRunner().invoke(app, [*args, "--zoom", "3", "--out", str(tmp_path / "bad")])
    assert r.exit_code != 0 and "zoom" in r.output and not (tmp_path / "bad").exists()


def test_early_exit_answers_sure_faces_from_the_first_views_and_runs_the_rest_only_for_the_others(whole, tmp_path):
    from fer.inference import Predictor
    from fer.policy import answer, probabilities, view_logits

    p = Predictor(whole)
    x = np.random.default_rng(4).integers(0, 255, (40, 48, 48), dtype=np.uint8)
    full = Policy(zooms=[1.1], flip=True, temperature=1.3)
    first = combine(view_logits(p.logits, x, Policy())[:1], 0.8)  # the face itself, at its own temperature
    threshold = float(np.median(first.max(1)))  # half the faces sure, half not
    policy = full.model_copy(update={"early_exit": EarlyExit(views=1, threshold=threshold, temperature=0.8)})
    sure = first.max(1) >= threshold
    assert 0 < sure.sum() < len(x)
    expected = np.where(sure[:, None], first, p.predict_proba(x, policy=full))
    assert np.abs(p.predict_proba(x, policy=policy) - expected).max() <= 1e-6
    # Each face is answered on its own: in any batch as one by one (serving sends one face at a time).
    one_by_one = np.concatenate([p.predict_proba(x[i : i + 1], policy=policy) for i in range(len(x))])
    assert np.abs(one_by_one - expected).max() <= 1e-6
    assert np.abs(p.predict_proba(x, policy=policy, batch_size=7) - expected).max() <= 1e-6
    # From precomputed logits of every view (calibration, evaluation of alternatives): the same answers.
    assert np.abs(answer(view_logits(p.logits, x, full), policy) - expected).max() <= 1e-6
    # The saving: the sure faces never reach the network a second time.
    seen = []
    probabilities(lambda v: seen.append(len(v)) or p.logits(v), x, policy)
    assert seen == [len(x), (len(x) - sure.sum()) * (full.views - 1)]
    # A threshold no face reaches is the full policy; one every face reaches is the first view alone.
    never = policy.model_copy(update={"early_exit": EarlyExit(views=1, threshold=1.0, temperature=0.8)})
    assert np.abs(p.predict_proba(x, policy=never) - p.predict_proba(x, policy=full)).max() <= 1e-6


def test_early_exit_round_trips_as_schema_5_and_must_leave_views_to_add(whole, tmp_path):
    meta = read_meta(whole)
    meta.policy = Policy(flip=True, temperature=1.1, early_exit=EarlyExit(views=1, threshold=0.8, temperature=0.9))
    write_meta(tmp_path, meta)
    raw = json.loads((tmp_path / "meta.json").read_text())
    # An older fer must refuse it (it would run every view and answer differently), not serve it.
    assert raw["schema_version"] == 5 and raw["policy"]["early_exit"]["threshold"] == 0.8
    assert read_meta(tmp_path).policy == meta.policy
    with pytest.raises(ValueError, match="fewer than the policy's 2 views"):
        Policy(flip=True, early_exit=EarlyExit(views=2, threshold=0.8))
    with pytest.raises(ValueError, match="threshold"):
        EarlyExit(views=1, threshold=1.5)


def test_calibrate_fits_both_temperatures_of_an_early_exit_and_fusing_refuses_it(whole, session_csv, tmp_path):
    from typer.testing import CliRunner

    from fer.cli import app
    from fer.data import load_dataset
    from fer.ensemble import fuse
    from fer.evaluate import evaluate_split
    from fer.inference import Predictor
    from fer.registry import open_registry

    open_registry(tmp_path / "reg").register("tiny", whole)
    args = ["calibrate", "--model", "tiny@1", "--registry", str(tmp_path / "reg"), "--data", str(session_csv)]
    exit_at = ["--exit-views", "1", "--exit-threshold", "0.5"]
    r = CliRunner().invoke(app, [*args, "--flip", *exit_at, "--out", str(tmp_path / "e")])
    assert r.exit_code == 0, r.output
    assert "early exit" in r.output and "answered by them alone" in r.output
    ds = load_dataset(session_csv)
    meta = read_meta(tmp_path / "e")
    logits = Predictor(whole).view_logits(ds["val"].x, Policy(flip=True))
    assert meta.policy.temperature == pytest.approx(fit_temperature(logits, ds["val"].y), rel=1e-3)
    assert meta.policy.early_exit.temperature == pytest.approx(fit_temperature(logits[:1], ds["val"].y), rel=1e-3)
    sure = combine(logits[:1], meta.policy.early_exit.temperature).max(1) >= 0.5  # kept for the benchmarks
    assert meta.calibration["exit_share"] == pytest.approx(sure.mean())
    assert meta.metrics["test_acc"] == pytest.approx(evaluate_split(Predictor(tmp_path / "e"), ds["test"])["accuracy"])
    # No threshold given and none to keep: a clear refusal, nothing written.
    r = CliRunner().invoke(app, [*args, "--flip", "--exit-views", "1", "--out", str(tmp_path / "bad")])
    assert r.exit_code != 0 and "early_exit.threshold" in r.output and not (tmp_path / "bad").exists()
    with pytest.raises(ArtifactError, match="exits early"):
        fuse([tmp_path / "e", whole], tmp_path / "fused")


def test_the_policy_search_scores_each_combination_as_the_policy_answers_it():
    # benchmarks/policy_search.py chooses production's candidates from cached logits; its numbers
    # must be what fer.policy answers for that view set, temperature and early exit.
    import sys

    from conftest import REPO

    sys.path.insert(0, str(REPO / "benchmarks"))
    from policy_search import THRESHOLDS, VIEW_SETS, search

    from fer.policy import answer

    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 600)
    signal = np.eye(7)[y] * 2.0  # informative but noisy logits, six views each
    nets = {n: signal[None] + rng.normal(0, s, (6, 600, 7)) for n, s in (("a", 1.5), ("b", 2.0))}
    rows = search(nets, y, members=2, max_passes=12)
    row = {(r["combination"], bool(r["early_exit"])): r for r in rows}

    four = nets["a"][VIEW_SETS["four"]]
    t = fit_temperature(four, y)
    full = float((combine(four, t).argmax(1) == y).mean())
    assert row[("a four", False)]["val_acc"] == pytest.approx(full) and row[("a four", False)]["passes"] == 4
    # The early exit: the cheapest threshold on the grid that keeps the four views' accuracy, and
    # its answers are those of fer.policy with that exit (first view's temperature fitted alone).
    ex = row[("a four", True)]
    th = ex["early_exit"]["threshold"]
    assert th > THRESHOLDS[0]  # so the cheaper threshold below is on the grid too
    first = EarlyExit(views=1, threshold=th, temperature=fit_temperature(four[:1], y))
    acc = (answer(four, Policy(flip=True, zooms=[1.0833], temperature=t, early_exit=first)).argmax(1) == y).mean()
    assert ex["val_acc"] == pytest.approx(acc, abs=1e-9) and ex["val_acc"] >= full
    cheaper = EarlyExit(views=1, threshold=round(th - 0.05, 2), temperature=first.temperature)
    low = answer(four, Policy(flip=True, zooms=[1.0833], temperature=t, early_exit=cheaper))
    assert (low.argmax(1) == y).mean() < full
    assert 1 < ex["passes"] < 4
    # Rows come best first, and no combination is over its budget.
    assert [r["val_acc"] for r in rows] == sorted((r["val_acc"] for r in rows), reverse=True)
    assert all(r["passes"] <= 12 for r in rows) and ("a six + b six", False) in row
