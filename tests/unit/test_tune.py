"""Optuna tuning end to end on small synthetic data: pruning, resume, shared journal, best config."""

from __future__ import annotations

import pytest
import yaml
from conftest import require_module
from typer.testing import CliRunner

optuna = require_module("optuna", "tuning (requirements.txt)")
require_module("torch", "training (requirements.txt)")

from fer.cli import app
from fer.config import ConfigError, load_train_config
from fer.tune import load_tune_config, run_study


def _cfg(tmp_path, *extra):
    # The tiny network: these tests check the study (pruning, resume, workers), not ResNet-18.
    base = [
        "base.model.arch=tiny",
        "base.precision=fp32",
        "base.eval_batch_size=64",
        "base.epochs=2",
        "epochs=3",
        "subset=1.0",
        f"output_dir={tmp_path}",
        "search.batch_size=[16, 32]",
        "search.optimizer=[adam, sgd]",
        "search.lr=[0.00001, 0.01]",
    ]
    return load_tune_config(None, [*base, *extra])


def test_study_runs_prunes_and_writes_results(tmp_path, session_csv):
    cfg = _cfg(tmp_path, "trials=8", "study_name=s1")
    r = run_study(cfg, data_path=str(session_csv))
    assert r.n_complete + r.n_pruned == 8
    assert r.n_pruned >= 1, "the median pruner stopped no trial"
    assert 0 < r.best_value <= 1 and set(r.best_params) == {"lr", "batch_size", "optimizer"}
    out = tmp_path / "s1"
    for f in ("study.db", "best.yaml", "summary.yaml", "history.png", "intermediate.png"):
        assert (out / f).is_file(), f
    best = load_train_config(out / "best.yaml")
    assert best.optim.lr == pytest.approx(r.best_params["lr"]) and best.batch_size == r.best_params["batch_size"]
    assert best.data.subset == 1.0 and best.epochs == 2  # the final model trains on all of Training
    assert yaml.safe_load((out / "summary.yaml").read_text())["pruned"] == r.n_pruned


def test_study_resumes_from_storage(tmp_path, session_csv):
    run_study(_cfg(tmp_path, "trials=2", "study_name=s2"), data_path=str(session_csv))
    study = optuna.load_study(study_name="s2", storage=f"sqlite:///{tmp_path / 's2' / 'study.db'}")
    first = [t.params for t in study.trials]
    r = run_study(_cfg(tmp_path, "trials=4", "study_name=s2"), data_path=str(session_csv))
    study = optuna.load_study(study_name="s2", storage=f"sqlite:///{tmp_path / 's2' / 'study.db'}")
    assert len(study.trials) == 4 and [t.params for t in study.trials[:2]] == first
    assert r.n_complete + r.n_pruned == 4


def test_two_workers_share_a_journal(tmp_path, session_csv):
    r = run_study(_cfg(tmp_path, "trials=4", "study_name=s3", "pruner=none"), data_path=str(session_csv), workers=2)
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str((tmp_path / "s3" / "journal.log").resolve())))
    trials = optuna.load_study(study_name="s3", storage=storage).trials
    assert len(trials) == 4 and len({t.number for t in trials}) == 4
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert r.n_complete == 4


def test_best_config_trains_with_fer_train(tmp_path, session_csv):
    cfg = _cfg(tmp_path, "trials=2", "study_name=s4")
    r = run_study(cfg, data_path=str(session_csv))
    res = CliRunner().invoke(
        app,
        [
            "train",
            "--config",
            str(r.best_config),
            "--set",
            "epochs=1",
            "--data",
            str(session_csv),
            "--run-dir",
            str(tmp_path / "final"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "final" / "artifact" / "model.onnx").is_file()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("search.lr=[0.01, 0.001]", "need low < high"),
        ("search.lr=[0, 0.01]", "must start above 0"),
        ("search.optimizer=[rmsprop]", "search.optimizer"),
        ("search.batch_size=[]", "at least one valid choice"),
        ("search.momentum=[0.8, 0.9]", "momentum"),
        ("trials=0", "trials"),
        ("base.optim.lrr=0.1", "base training config"),
    ],
)
def test_bad_search_space_is_a_clear_error(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        _cfg(tmp_path, override)


def test_shipped_tuning_config_validates():
    cfg = load_tune_config("experiments/tune.yaml")
    assert cfg.trials == 50 and cfg.search.optimizer == ["adam", "sgd"] and cfg.search.batch_size == [32, 64, 128]
