"""The `fer` CLI through Typer's runner: train, evaluate, export and the registry commands."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from fer.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_train_register_and_evaluate(session_csv, tmp_path):
    reg = str(tmp_path / "reg")
    r = run(
        "train",
        "--config",
        "experiments/baseline.yaml",
        "--set",
        "epochs=1",
        "--set",
        "batch_size=32",
        "--set",
        "name=cli-model",
        "--data",
        str(session_csv),
        "--run-dir",
        str(tmp_path / "run"),
        "--register",
        "--registry",
        reg,
    )
    assert r.exit_code == 0, r.output
    assert "registered cli-model@1" in r.output
    assert (tmp_path / "run" / "events.jsonl").is_file()

    r = run("registry", "promote", "cli-model@1", "--registry", reg)
    assert r.exit_code == 0 and "cli-model@1 is now production" in r.output
    r = run("registry", "list", "cli-model", "--registry", reg)
    assert "cli-model@1" in r.output and "production" in r.output
    r = run("registry", "show", "cli-model@production", "--registry", reg)
    card = json.loads(r.output)
    assert card["ref"] == "cli-model@1" and "val_acc" in card["metrics"]

    out = tmp_path / "report"
    r = run(
        "evaluate",
        "--model",
        "cli-model@production",
        "--registry",
        reg,
        "--data",
        str(session_csv),
        "--split",
        "val",
        "--tta",
        "--out",
        str(out),
    )
    assert r.exit_code == 0, r.output
    assert "accuracy" in r.output and "macro-F1" in r.output
    assert (out / "confusion_matrix.png").is_file() and (out / "reliability.png").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 35 and metrics["policy"]["flip"] is True
    r = run("evaluate", "--model", "cli-model@production", "--registry", reg, "--data", str(session_csv), "--unseen")
    assert r.exit_code == 0, r.output
    assert "test without Training duplicates (35 images" in r.output  # synthetic faces repeat none


def test_export_fp16(trained_artifact, tmp_path):
    r = run("export", str(trained_artifact), "--out", str(tmp_path / "slim"))
    assert r.exit_code == 0, r.output
    assert {p.name for p in (tmp_path / "slim").iterdir()} == {"model.onnx", "meta.json"}
    metrics = json.loads((tmp_path / "slim" / "meta.json").read_text())["metrics"]
    assert f"'val_acc': {round(metrics['val_acc'], 4)}" in r.output  # the split metrics, rounded to read


def test_registry_promote_rollback_and_gate(trained_artifact, tmp_path):
    reg = str(tmp_path / "reg")
    for _ in range(2):
        assert run("registry", "register", str(trained_artifact), "--name", "x", "--registry", reg).exit_code == 0
    assert run("registry", "promote", "x@1", "--registry", reg).exit_code == 0
    assert run("registry", "promote", "x@2", "--registry", reg).exit_code == 0  # equal accuracy passes
    r = run("registry", "rollback", "x", "--registry", reg)
    assert r.exit_code == 0 and "production is back on x@1" in r.output


def test_errors_are_one_clear_line(tmp_path, session_csv):
    r = runner.invoke(app, ["train", "--set", "bogus=1", "--data", str(session_csv)])
    assert r.exit_code == 2 and "bogus: Extra inputs are not permitted" in r.output
    r = runner.invoke(
        app, ["evaluate", "--model", "nope@production", "--registry", str(tmp_path), "--data", str(session_csv)]
    )
    assert r.exit_code == 2 and "no model named 'nope'" in r.output
    r = runner.invoke(app, ["registry", "show", "../../etc@1", "--registry", str(tmp_path)])
    assert r.exit_code == 2 and "invalid model name" in r.output
    r = runner.invoke(app, ["train", "--data", str(tmp_path / "missing.csv")])
    assert r.exit_code == 2 and "data path does not exist" in r.output


def test_help_keeps_bracketed_text_shows_defaults_and_reflows():
    wide = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    serve = wide.invoke(app, ["serve", "--help"]).output
    for text in ("(env FER_HOST; default 127.0.0.1)", "(env FER_PORT; default 8000)", "(env FER_WORKERS; default 1)"):
        assert text in serve, serve
    quantize = wide.invoke(app, ["quantize", "--help"]).output
    # The docstring is one paragraph, not broken where its source lines break.
    assert "promoting it is gated on validation accuracy" in quantize, quantize
    assert "(env FER_MODEL; default fer-resnet18@production)" in quantize


def test_unknown_override_key_suggests_its_section(session_csv):
    r = runner.invoke(app, ["train", "--set", "subset=0.05", "--data", str(session_csv)])
    assert r.exit_code == 2 and "did you mean data.subset?" in r.output


def test_registry_list_names_an_unknown_model(tmp_path):
    r = runner.invoke(app, ["registry", "list", "nosuch", "--registry", str(tmp_path / "reg")])
    assert r.exit_code == 2 and "no model named 'nosuch'" in r.output and "fer-resnet18" in r.output


def test_force_needs_a_reason(trained_artifact, tmp_path):
    reg = str(tmp_path / "reg")
    assert run("registry", "register", str(trained_artifact), "--name", "x", "--registry", reg).exit_code == 0
    r = runner.invoke(app, ["registry", "promote", "x@1", "--force", "--registry", reg])
    assert r.exit_code == 2 and "--force needs --reason" in r.output
    r = run("registry", "promote", "x@1", "--force", "--reason", "first version", "--registry", reg)
    assert r.exit_code == 0
