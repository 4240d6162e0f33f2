"""Run configs: YAML plus --set overrides, validated, unknown keys refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from fer.config import ConfigError, TrainConfig, load_train_config

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


# tune.yaml is a tuning study (test_tune.py), pipeline*.yaml are pipelines (test_pipeline.py).
TRAIN_CONFIGS = sorted(
    p for p in EXPERIMENTS.glob("*.yaml") if p.name != "tune.yaml" and not p.name.startswith("pipeline")
)


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    assert isinstance(load_train_config(path), TrainConfig)


def test_overrides_are_typed(tmp_path):
    cfg = load_train_config(
        EXPERIMENTS / "baseline.yaml", ["epochs=3", "optim.lr=1e-3", "augment.enabled=false", "model.arch=resnet18_s2"]
    )
    assert cfg.epochs == 3 and cfg.optim.lr == 1e-3 and cfg.augment.enabled is False
    assert cfg.model.arch == "resnet18_s2"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["epochs=0"], "epochs"),
        (["optim.name=rmsprop"], "optim.name"),
        (["learning_rate=0.1"], "learning_rate: Extra inputs are not permitted"),
        (["optim.lrr=0.1"], "optim.lrr"),
        (["device=tpu"], "device must be"),
        (["epochs"], "not of the form key=value"),
        (["epochs.x=1"], "is not a section"),
    ],
)
def test_bad_overrides(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(EXPERIMENTS / "baseline.yaml", overrides)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_train_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_train_config(tmp_path / "list.yaml")
    (tmp_path / "typo.yaml").write_text("epochs: 5\nbatchsize: 32\n")
    with pytest.raises(ConfigError, match="batchsize"):
        load_train_config(tmp_path / "typo.yaml")


@pytest.mark.parametrize(
    ("override", "hint"),
    [("subset=0.05", "did you mean data.subset?"), ("optim.lrr=0.1", "did you mean optim.lr"), ("zzz=1", None)],
)
def test_an_unknown_key_suggests_the_right_one(override, hint):
    with pytest.raises(ConfigError) as e:
        load_train_config(None, [override])
    assert "Extra inputs are not permitted" in str(e.value)
    assert (hint in str(e.value)) if hint else ("did you mean" not in str(e.value))
