"""The loop back from production on the real data: the shipped production model fine-tuned on
FER-2013 Training plus feedback by the pipeline, and the gate deciding on numbers it measured."""

from __future__ import annotations

import shutil

import numpy as np
import yaml
from conftest import FERPLUS_CSV, PRODUCTION_VERSION, REPO, require_module

require_module("torch", "fine-tuning (requirements.txt)")


def test_the_pipeline_fine_tunes_the_shipped_production_model_with_feedback(fer2013_csv, fer2013, tmp_path):
    from PIL import Image

    from fer.artifact import read_meta
    from fer.config import Settings
    from fer.data import LABELS
    from fer.pipeline import load_pipeline_config, run_pipeline
    from fer.registry import open_registry

    shutil.copytree(REPO / "models" / "registry", tmp_path / "reg")  # the shipped one stays untouched
    # Feedback as `fer feedback export` lays it out: 60 PrivateTest faces with their labels, the
    # first 12 held out. (The HTTP and browser path to this layout has its own tests.)
    test = fer2013["test"]
    for i in range(60):
        part = "test" if i < 12 else "train"
        folder = tmp_path / "fb" / part / LABELS[test.y[i]]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(test.x[i])).save(folder / f"{i}.png")
    config = yaml.safe_load((REPO / "experiments" / "pipeline-finetune.yaml").read_text())
    config |= {"data": str(fer2013_csv), "feedback": str(tmp_path / "fb"), "registry": str(tmp_path / "reg"),
               "output_dir": str(tmp_path / "out"), "model_tests_limit": 300,
               "ferplus": str(FERPLUS_CSV) if FERPLUS_CSV.is_file() else None,
               # A small slice of Training for one epoch: the point is the loop, not the accuracy.
               "train": ["data.subset=0.01", "epochs=1"]}  # fmt: skip
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(config))
    shutil.copy(REPO / "experiments" / "finetune.yaml", tmp_path / "finetune.yaml")
    cfg, base = load_pipeline_config(tmp_path / "p.yaml")
    summary = run_pipeline(cfg, base, Settings.model_construct())

    steps = summary["steps"]
    assert steps["data"]["feedback_merged"] == 48 and steps["data"]["feedback_holdout"] == 12
    reg = open_registry(tmp_path / "reg")
    production = read_meta(reg.resolve(f"fer-resnet18@{PRODUCTION_VERSION}").path)
    # An ensemble fine-tunes each member (train, train_2, ...); a single network is its own member.
    for i, ref in enumerate(production.policy.members or [f"fer-resnet18@{PRODUCTION_VERSION}"]):
        n = "" if i == 0 else f"_{i + 1}"
        parent = reg.resolve(read_meta(reg.resolve(ref).path).quantization["parent"])
        tuned = read_meta(steps[f"train{n}"]["artifact"])
        assert tuned.fine_tuned_from["artifact"] == str(parent.path.resolve())
        # Each member keeps its own input window (version 9's third member sees 40x40 crops).
        assert tuned.policy.crop == read_meta(parent.path).policy.crop
        # The shipped config makes each member int8, as production's are, unless int8 costs accuracy.
        q = steps[f"quantize{n}"]
        assert abs(q["int8_val_acc"] - q["fp32_val_acc"]) < 0.01, q
        assert q["kept"] == ("int8" if q["int8_val_acc"] >= q["fp32_val_acc"] - cfg.quantize_tolerance else "fp32")
    if production.policy.members:  # fused again under production's policy, the temperature refitted
        policy = read_meta(steps["fuse"]["artifact"]).policy
        assert (policy.flip, policy.crop, policy.crops) == (production.policy.flip, production.policy.crop,
                                                            production.policy.crops)  # fmt: skip
        assert abs(policy.temperature - production.policy.temperature) < 0.2
    cand, held = steps["evaluate"]["candidate"], steps["evaluate"]["baseline"]
    assert held["ref"] == f"fer-resnet18@{PRODUCTION_VERSION}"
    # Fine-tuned, not retrained: after a few small steps it is still the production network.
    assert abs(cand["val_acc"] - held["val_acc"]) < 0.02 and cand["val_acc"] > 0.6
    # One epoch on 1% of Training may cost a behavioural check (seen: directional/fear on the
    # ensemble); then the gate must refuse it for that, before comparing any accuracy.
    if not steps["model_tests"]["passed"]:
        assert summary["promoted"] is False and "model tests failed" in summary["refused"], summary
        return
    # The gate decided on the side-by-side numbers, both metrics shown, whichever way it went.
    if summary["promoted"]:
        gate = reg.history("fer-resnet18")[-1]["gate"]
        assert gate["baseline"]["ref"] == held["ref"] and "feedback_acc" in gate["summary"]
        assert reg.resolve("fer-resnet18@production").ref == summary["registered"]
    else:
        assert "measured against" in summary["refused"] and "feedback_acc" in summary["refused"]
