"""The notebooks run top to bottom on a tiny budget (a cell error fails the suite), outputs stripped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import FER_CSV, PRODUCTION_VERSION, REPO, require_module

nbformat = require_module("nbformat", "executing the notebooks")
require_module("nbclient", "executing the notebooks")

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_notebooks_exist_and_are_stripped():
    assert [p.name for p in NOTEBOOKS] == [
        "01_data_exploration.ipynb",
        "02_optuna_experiments.ipynb",
        "03_error_analysis.ipynb",
    ]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs in git"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    # The tiny network: the notebook's study is under test, not ResNet-18 (seconds, not minutes).
    env = {
        "NB_TRIALS": "4",
        "NB_EPOCHS": "2",
        "NB_SUBSET": "0.02",
        "NB_ARCH": "tiny",
        "NB_OUTPUT": str(tmp_path / "out"),
        "FER_REGISTRY_DIR": str(tmp_path / "registry"),
        "CLEARML_CACHE_DIR": str(tmp_path / "clearml"),
        "MPLBACKEND": "Agg",
    }
    if FER_CSV.is_file():
        env["FER_DATA"] = str(FER_CSV)  # else the notebooks use their synthetic stand-in
    for k in [k for k in os.environ if k.startswith(("CLEARML_", "TRAINS_"))]:
        monkeypatch.delenv(k)  # a kernel that inherits another run's task id thinks it is its child
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    if path.stem.startswith("02"):
        assert "best val_acc" in text
        assert any(Path(tmp_path / "out" / "notebook").glob("*.png"))
    if path.stem.startswith("03"):
        assert "accuracy" in text and f"fer-resnet18@{PRODUCTION_VERSION}" in text
    assert os.path.isdir(path.parent)
