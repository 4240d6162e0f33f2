"""Trackers for real: ClearML in offline mode and Neptune in offline/debug mode, driven by `fit`."""

from __future__ import annotations

import json

import pytest
from conftest import require_module

from fer.artifact import ArtifactMeta
from fer.config import ConfigError, Settings, load_train_config
from fer.tracking import ClearMLTracker, NeptuneTracker, TrackerUnavailable, make_tracker

require_module("torch", "training (requirements.txt)")
require_module("clearml", "the ClearML tracker (requirements.txt)")
require_module("neptune", "the Neptune tracker (requirements.txt)")

from fer.train import fit

FAST = ["epochs=2", "batch_size=32", "eval_batch_size=64", "model.arch=tiny", "precision=fp32"]


@pytest.fixture
def clearml_env(tmp_path, monkeypatch):
    # Also the variables the SDK sets itself (offline flag, master-process id): undone after the
    # test, so no later process (a notebook kernel) inherits them and thinks it is a child task.
    for var in (
        "CLEARML_API_HOST",
        "CLEARML_API_ACCESS_KEY",
        "CLEARML_API_SECRET_KEY",
        "CLEARML_CONFIG_FILE",
        "CLEARML_OFFLINE_MODE",
        "CLEARML_PROC_MASTER_ID",
        "CLEARML_TASK_ID",
        "TRAINS_OFFLINE_MODE",
        "TRAINS_PROC_MASTER_ID",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CLEARML_CACHE_DIR", str(tmp_path / "clearml"))
    return tmp_path / "clearml"


def test_clearml_offline_session_holds_the_run(session_csv, tmp_path, clearml_env):
    tracker = ClearMLTracker()
    assert tracker.offline  # no server configured
    # The real network: its architecture is what the run is tagged with.
    fit(
        load_train_config(None, [*FAST, "model.arch=resnet18"]),
        data_path=str(session_csv),
        run_dir=tmp_path / "run",
        tracker=tracker,
    )
    assert tracker.session_zip is not None and tracker.session_zip.is_file()
    folder = tracker.session_zip.with_suffix("")
    events = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    events = [e for batch in events for e in (batch if isinstance(batch, list) else [batch])]
    scalars = {(e["metric"], e["variant"], e["iter"]) for e in events if e["type"] == "training_stats_scalar"}
    assert {("loss", "train", 1), ("acc", "val", 2), ("lr", "lr", 1)} <= scalars
    plots = [e for e in events if e["type"] == "plot" and e["metric"] == "confusion_matrix"]
    assert plots and len(json.loads(plots[0]["plot_str"])["data"][0]["z"]) == 7
    task = json.loads((folder / "task.json").read_text())
    assert task["project_name"] == "fer" and "resnet18" in task["tags"]
    assert task["hyperparams"]["config"]["optim/lr"]["value"] == "0.002"
    assert len(task["hyperparams"]["data"]["sha256"]["value"]) == 64
    model = task["offline_output_models"][0]
    assert model["init"]["name"] == "fer-resnet18" and model["init"]["framework"] == "ONNX"
    assert model["init"]["label_enumeration"]["happy"] == 3
    assert (folder / "models" / "model.onnx").is_file()


def test_clearml_update_weights_offline_bug_still_present(tmp_path, clearml_env):
    # fer.tracking.update_weights works around clearml 2.1.12's offline update_weights bug. When
    # this test fails, the SDK is fixed: delete the shim and this test.
    from clearml import OutputModel, Task

    Task.set_offline(True)
    task = Task.init(
        project_name="fer",
        task_name="shim-check",
        auto_connect_frameworks={"detect_repository": False},
        auto_resource_monitoring=False,
        reuse_last_task_id=False,
    )
    weights = tmp_path / "w.onnx"
    weights.write_bytes(b"weights")
    try:
        with pytest.raises(AttributeError, match="locked"):
            OutputModel(task=task, name="m").update_weights(weights_filename=str(weights))
    finally:
        task.close()


@pytest.mark.timeout(60)
def test_clearml_unreachable_server_fails_fast(monkeypatch, clearml_env):
    from conftest import free_port

    monkeypatch.setenv("CLEARML_API_HOST", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("CLEARML_API_ACCESS_KEY", "key")
    monkeypatch.setenv("CLEARML_API_SECRET_KEY", "secret")
    tracker = ClearMLTracker.from_settings(Settings())
    assert not tracker.offline
    with pytest.raises(TrackerUnavailable, match="does not answer"):
        tracker.start("fer", "x", [], {})


def test_neptune_debug_mode_records_values():
    t = NeptuneTracker(mode="debug")
    t.start("fer", "run-1", ["resnet18"], {"optim": {"lr": 0.002}, "epochs": 3})
    t.log_metrics({"train_loss": 1.5, "val_acc": 0.4, "lr": 0.001}, step=1)
    t.log_metrics({"train_loss": 1.2, "val_acc": 0.5, "lr": 0.002}, step=2)
    t.log_confusion_matrix([[1, 0], [0, 1]], ["a", "b"], step=2)
    meta = ArtifactMeta(
        arch="resnet18",
        labels=["a", "b"],
        normalize={"mean": 0.5, "std": 0.25},
        metrics={"val_acc": 0.5},
        data={"sha256": "abc"},
        code_version="deadbee",
    )
    t.log_artifact("runs/x/artifact", "fer-resnet18", meta)
    run = t.run
    assert run["parameters/optim/lr"].fetch() == 0.002
    assert run["metrics/train_loss"].fetch_values()["value"].tolist() == [1.5, 1.2]
    assert run["metrics/lr"].fetch_values()["value"].tolist() == [0.001, 0.002]
    assert json.loads(run["metrics/confusion_matrix"].fetch_last())["matrix"] == [[1, 0], [0, 1]]
    assert run["data/sha256"].fetch() == "abc" and run["model/metrics/val_acc"].fetch() == 0.5
    assert run["sys/tags"].fetch() == {"resnet18"}
    t.finish("completed")


def test_neptune_offline_run_through_fit(session_csv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # offline runs go to ./.neptune
    for var in ("NEPTUNE_API_TOKEN", "NEPTUNE_PROJECT", "NEPTUNE_MODE"):
        monkeypatch.delenv(var, raising=False)
    t = NeptuneTracker.from_settings(Settings())
    assert t.mode == "offline"
    fit(
        load_train_config(None, FAST),
        data_path=str(session_csv),
        run_dir=tmp_path / "run",
        tracker=t,
        export_onnx=False,
    )
    assert any((tmp_path / ".neptune").rglob("*")), "no offline Neptune data written"


def test_neptune_mode_follows_credentials(monkeypatch):
    monkeypatch.setenv("NEPTUNE_API_TOKEN", "token")
    monkeypatch.setenv("NEPTUNE_PROJECT", "team/fer")
    monkeypatch.delenv("NEPTUNE_MODE", raising=False)
    assert NeptuneTracker.from_settings(Settings()).mode == "async"


def test_several_trackers_and_unknown_names(tmp_path):
    multi = make_tracker("local,none", tmp_path)
    multi.start("fer", "x", [], {"a": 1})
    multi.log_metrics({"val_acc": 0.5}, step=1)
    multi.finish("completed")
    assert (tmp_path / "events.jsonl").read_text().count("\n") == 3
    with pytest.raises(ConfigError, match="unknown tracker"):
        make_tracker("local,wandb", tmp_path)


def test_queue_without_server_is_a_clear_error(monkeypatch, session_csv):
    from typer.testing import CliRunner

    from fer.cli import app

    for var in ("CLEARML_API_HOST", "CLEARML_API_ACCESS_KEY", "CLEARML_API_SECRET_KEY"):
        monkeypatch.delenv(var, raising=False)
    r = CliRunner().invoke(app, ["train", "--queue", "gpu", "--data", str(session_csv)])
    assert r.exit_code == 2 and "--queue needs a ClearML server" in r.output


def test_queue_enqueues_on_the_agent_queue(monkeypatch, session_csv):
    # No ClearML server here: Task.init / execute_remotely are replaced at the SDK boundary and
    # the test asserts the calls; execute_remotely exits the process locally, as the SDK does.
    import clearml
    from typer.testing import CliRunner

    from fer.cli import app

    calls = {}

    class FakeTask:
        def connect(self, cfg, name):
            calls["connect"] = (cfg, name)

        def execute_remotely(self, **kw):
            calls["execute_remotely"] = kw
            raise SystemExit(0)

    def fake_init(**kw):
        calls["init"] = kw
        return FakeTask()

    monkeypatch.setattr(clearml.Task, "init", staticmethod(fake_init))
    monkeypatch.setattr(
        "fer.clearml_session.check_clearml_server", lambda host, timeout=3.0: calls.setdefault("pinged", host)
    )
    for var, value in (
        ("CLEARML_API_HOST", "http://clearml:8008"),
        ("CLEARML_API_ACCESS_KEY", "k"),
        ("CLEARML_API_SECRET_KEY", "s"),
    ):
        monkeypatch.setenv(var, value)
    r = CliRunner().invoke(
        app,
        [
            "train",
            "--config",
            "experiments/gpu.yaml",
            "--queue",
            "gpu-a100",
            "--set",
            "epochs=3",
            "--data",
            str(session_csv),
        ],
    )
    assert r.exit_code == 0, r.output
    assert calls["pinged"] == "http://clearml:8008"
    assert calls["init"]["project_name"] == "fer" and calls["init"]["task_name"] == "fer-resnet18"
    assert calls["execute_remotely"] == {"queue_name": "gpu-a100", "clone": False, "exit_process": True}
    cfg, section = calls["connect"]
    assert section == "config" and cfg["epochs"] == 3 and cfg["model/arch"] == "resnet18_cifar"
