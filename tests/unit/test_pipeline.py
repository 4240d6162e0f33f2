"""The training pipeline end to end on a small synthetic set: every step, the cache, the gate."""

from __future__ import annotations

import json

import yaml
from conftest import require_module
from typer.testing import CliRunner

require_module("torch", "training (requirements.txt)")

from fer.cli import app


def run(config, *sets):
    r = CliRunner().invoke(app, ["pipeline", "--config", str(config), *[x for s in sets for x in ("--set", s)]],
                           catch_exceptions=False)  # fmt: skip
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout[r.stdout.index("{") :])


def test_steps_run_cache_and_rerun_only_what_changed(session_csv, tmp_path):
    config = tmp_path / "pipeline.yaml"
    (tmp_path / "train.yaml").write_text(yaml.safe_dump({"epochs": 2, "batch_size": 32, "eval_batch_size": 64,
                                                         "precision": "fp32", "model": {"arch": "tiny"}}))  # fmt: skip
    config.write_text(yaml.safe_dump({"name": "pipe", "data": str(session_csv), "train_config": "train.yaml",
                                      "registry": str(tmp_path / "registry"), "output_dir": str(tmp_path / "out"),
                                      "model_tests_limit": 30}))  # fmt: skip
    first = run(config)
    steps = first["steps"]
    assert [steps[s]["cached"] for s in ("data", "train", "evaluate", "model_tests")] == [False] * 4
    assert steps["data"]["train_size"] == 140 and 0 <= steps["evaluate"]["val_acc"] <= 1
    assert first["registered"] == "pipe@1"
    assert first["promoted"] is steps["model_tests"]["passed"]  # the gate followed the model tests
    if not first["promoted"]:
        assert "model tests failed" in first["refused"]
    again = run(config)
    assert [again["steps"][s]["cached"] for s in ("data", "train", "evaluate", "model_tests")] == [True] * 4
    assert again["registered"] == "pipe@1"  # the same artifact is not registered twice
    changed = run(config, 'train=["epochs=1"]')
    assert changed["steps"]["data"]["cached"] is True  # only what the change reaches runs again
    assert [changed["steps"][s]["cached"] for s in ("train", "evaluate", "model_tests")] == [False] * 3
    assert changed["registered"] == "pipe@2"


def test_feedback_is_merged_into_training_only(session_csv, tmp_path):
    import numpy as np
    from conftest import synthetic_images
    from PIL import Image

    from fer.config import Settings
    from fer.pipeline import load_pipeline_config, run_pipeline

    x, y = synthetic_images(20, seed=5)
    labels = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    for i, (img, c) in enumerate(zip(x, y, strict=True)):  # what fer feedback export writes
        part = "test" if i < 4 else "train"
        (tmp_path / "fb" / part / labels[c]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(img)).save(tmp_path / "fb" / part / labels[c] / f"{i}.png")
    (tmp_path / "train.yaml").write_text("epochs: 1\nprecision: fp32\nmodel: {arch: tiny}\n")
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"data": str(session_csv), "feedback": str(tmp_path / "fb"),
                                                     "train_config": "train.yaml", "promote": False,
                                                     "registry": str(tmp_path / "reg"),
                                                     "output_dir": str(tmp_path / "out")}))  # fmt: skip
    cfg, base = load_pipeline_config(tmp_path / "p.yaml")
    summary = run_pipeline(cfg, base, Settings.model_construct())
    # The 16 feedback crops outside its held-out part join Training; the 4 held out stay out.
    assert summary["steps"]["data"]["feedback_merged"] == 16 and summary["steps"]["data"]["train_size"] == 156
    assert "promoted" not in summary


def test_the_shipped_pipeline_config_validates_and_names_a_real_train_config():
    from conftest import REPO

    from fer.config import load_train_config
    from fer.pipeline import load_pipeline_config

    cfg, base = load_pipeline_config(REPO / "experiments" / "pipeline.yaml")
    assert cfg.promote and cfg.train == [] and load_train_config(base / cfg.train_config).epochs >= 1
