"""Optuna with a PostgreSQL storage, for real: a throwaway server, a study run by two worker
processes against it, and no trial lost or duplicated (the multi-machine setup, on one machine)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import free_port, require_binary, require_module

optuna = require_module("optuna", "tuning (requirements.txt)")
require_module("psycopg2", "Optuna's PostgreSQL storage (requirements.txt: psycopg2-binary)")
require_module("torch", "training (requirements.txt)")

from fer.tune import load_tune_config, run_study


def pg_binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)
    return found or require_binary(name, "a throwaway PostgreSQL server (Debian package postgresql)")


@pytest.fixture
def postgres():
    """A PostgreSQL server on 127.0.0.1 in a temp folder; its URL. Stopped and removed afterwards."""
    initdb, pg_ctl = pg_binary("initdb"), pg_binary("pg_ctl")
    # Not under pytest's tmp_path: its parents are private to root, and the server may run as
    # another user.
    tmp_path = Path(tempfile.mkdtemp(prefix="fer-pg-"))
    data, port = tmp_path / "pg", free_port()
    run_as = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: use its own system user
        require_binary("runuser", "starting PostgreSQL as its own user")
        run_as = ["runuser", "-u", "postgres", "--"]
        shutil.chown(tmp_path, "postgres")
    subprocess.run(
        [*run_as, initdb, "-D", str(data), "-U", "fer", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    opts = f"-p {port} -k {tmp_path} -c listen_addresses=127.0.0.1"
    subprocess.run(
        [*run_as, pg_ctl, "-D", str(data), "-o", opts, "-l", str(tmp_path / "pg.log"), "-w", "-t", "60", "start"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield f"postgresql+psycopg2://fer@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*run_as, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True, timeout=60)


def test_two_workers_share_a_postgres_study_without_losing_a_trial(postgres, tmp_path, session_csv):
    cfg = load_tune_config(
        None,
        [
            "base.model.arch=tiny",
            "base.precision=fp32",
            "base.eval_batch_size=64",
            "epochs=2",
            "subset=1.0",
            f"output_dir={tmp_path / 'out'}",
            "trials=6",
            "study_name=pg",
            "pruner=none",
            f"storage={postgres}",
            "search.batch_size=[16, 32]",
            "search.optimizer=[adam, sgd]",
            "search.lr=[0.0001, 0.01]",
        ],
    )
    result = run_study(cfg, data_path=str(session_csv), workers=2)
    trials = optuna.load_study(study_name="pg", storage=postgres).trials
    assert len(trials) == 6 and sorted(t.number for t in trials) == list(range(6))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert result.n_complete == 6
    # Both worker processes took part (each trial records the process that ran it).
    assert len({t.user_attrs["pid"] for t in trials}) == 2
