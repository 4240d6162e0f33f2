"""The training loop on small synthetic data: run folder, resume, stopping, interrupt, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from conftest import require_module

from fer.config import load_train_config
from fer.tracking import LocalTracker

require_module("torch", "training (requirements.txt)")

from fer.train import fit

# The loop is under test here, not the network: the tiny one keeps these tests to seconds. The first
# test trains the real ResNet-18, where the network matters.
FAST = ["batch_size=32", "eval_batch_size=64", "model.arch=tiny", "precision=fp32"]


def _cfg(*extra):
    return load_train_config(None, [*FAST, *extra])


def test_fit_writes_run_folder_and_learns(session_csv, tmp_path):
    run = tmp_path / "run"
    result = fit(
        _cfg("epochs=4", "optim.lr=0.003", "model.arch=resnet18", "keep_checkpoints=true"),
        data_path=str(session_csv),
        run_dir=run,
        tracker=LocalTracker(run),
        export_onnx=False,
    )
    for f in ("config.yaml", "best.pt", "last.pt", "events.jsonl", "artifact/meta.json", "artifact/weights.pt"):
        assert (run / f).is_file(), f
    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 4
    meta = json.loads((run / "artifact/meta.json").read_text())
    assert len(meta["history"]) == 4
    # Synthetic classes are trivially separable: a working loop gets well above chance (1/7).
    assert result.metrics["val_acc"] > 0.5
    events = [json.loads(line)["event"] for line in (run / "events.jsonl").read_text().splitlines()]
    assert events[0] == "start" and events[-1] == "finish" and events.count("metrics") == 4
    assert "confusion_matrix" in events and "artifact" in events


def test_the_epoch_log_keeps_a_small_learning_rate_readable(session_csv, tmp_path, caplog):
    # Rates under 5e-05 (a OneCycle run starts at peak / 25) printed as 0.0 when the log rounded to
    # four decimals; it shows four significant digits of what the history records.
    caplog.set_level("INFO", logger="fer.train")
    run = tmp_path / "run"
    fit(_cfg("epochs=1", "optim.lr=2e-5"), data_path=str(session_csv), run_dir=run, tracker=LocalTracker(run),
        export_onnx=False)  # fmt: skip
    lr = json.loads((run / "artifact/meta.json").read_text())["history"][0]["lr"]
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 1: "))
    assert 0 < lr < 5e-5 and f"'lr': {float(f'{lr:.4g}')}," in line and "'epoch': 1," in line, line


def test_same_seed_same_result(session_csv, tmp_path):
    a = fit(_cfg("epochs=1"), data_path=str(session_csv), run_dir=tmp_path / "a", export_onnx=False)
    b = fit(_cfg("epochs=1"), data_path=str(session_csv), run_dir=tmp_path / "b", export_onnx=False)
    assert a.metrics["val_loss"] == pytest.approx(b.metrics["val_loss"], abs=1e-5)


def test_resume_continues_to_the_same_end(session_csv, tmp_path):
    # An interrupted run (stopped after 1 of 3 epochs) resumed from last.pt ends like a straight run.
    straight = fit(_cfg("epochs=3"), data_path=str(session_csv), run_dir=tmp_path / "s", export_onnx=False)
    first = fit(
        _cfg("epochs=3"),
        data_path=str(session_csv),
        run_dir=tmp_path / "r",
        export_onnx=False,
        callbacks=[lambda epoch, m: epoch == 1],
    )
    assert first.metrics["epochs_run"] == 1
    resumed = fit(_cfg("epochs=99"), data_path=str(session_csv), resume=tmp_path / "r", export_onnx=False)
    assert resumed.metrics["epochs_run"] == 3  # the run's own config wins over the new one
    assert resumed.metrics["val_loss"] == pytest.approx(straight.metrics["val_loss"], abs=1e-4)
    # Its training time counts the epoch run before the stop as well as the two after it.
    history = json.loads((resumed.artifact_dir / "meta.json").read_text())["history"]
    assert len(history) == 3
    assert resumed.metrics["train_time_s"] >= sum(h["epoch_time_s"] for h in history)


def test_early_stopping(session_csv, tmp_path):
    # lr=0 never improves after epoch 1, so patience 1 stops after epoch 2.
    r = fit(
        _cfg("epochs=6", "early_stopping=1", "optim.lr=1e-12", "optim.scheduler=none"),
        data_path=str(session_csv),
        run_dir=tmp_path / "e",
        export_onnx=False,
    )
    assert r.metrics["epochs_run"] == 2 and r.metrics["best_epoch"] == 1


def test_ctrl_c_keeps_best_checkpoint(session_csv, tmp_path):
    def interrupt(epoch, metrics):
        if epoch == 2:
            raise KeyboardInterrupt

    r = fit(
        _cfg("epochs=5"), data_path=str(session_csv), run_dir=tmp_path / "i", callbacks=[interrupt], export_onnx=False
    )
    assert r.interrupted and r.metrics["epochs_run"] == 2
    assert (r.artifact_dir / "weights.pt").is_file()


def test_missing_resume_is_clear(tmp_path, session_csv):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        fit(_cfg(), data_path=str(session_csv), resume=tmp_path / "nope")


def test_a_finished_run_keeps_only_the_artifact(session_csv, tmp_path):
    # Checkpoints hold the optimizer state (~3x the weights); a finished run has nothing to resume.
    r = fit(_cfg("epochs=2"), data_path=str(session_csv), run_dir=tmp_path / "f", export_onnx=False)
    assert not (tmp_path / "f" / "last.pt").exists() and not (tmp_path / "f" / "best.pt").exists()
    assert (r.artifact_dir / "weights.pt").is_file()
    # A run stopped before its schedule ends (a callback, Ctrl-C) keeps last.pt to resume from.
    fit(
        _cfg("epochs=3"),
        data_path=str(session_csv),
        run_dir=tmp_path / "s",
        export_onnx=False,
        callbacks=[lambda epoch, m: epoch == 1],
    )
    assert (tmp_path / "s" / "last.pt").is_file()


def test_ferplus_soft_labels_are_what_the_network_learns(session_csv, tmp_path):
    # FER+ votes that all name the *next* class, and a PublicTest labelled that way too: a loop
    # that trains on the votes scores well there, one that trained on the CSV's labels scores ~0.
    # mixup on top must not stop it learning.
    from fer.data import Dataset, Split, load_dataset

    ds = load_dataset(session_csv, cache_dir=tmp_path / "c")
    n = sum(len(s) for s in ds.splits.values())
    nxt = np.zeros(n, dtype=int)
    for split in ds.splits.values():
        nxt[split.rows] = (split.y + 1) % 7
    col = [4, 5, 6, 1, 3, 2, 0]  # where each FER-2013 class (angry..neutral) sits among the 10 votes
    lines = ["Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"]
    for i in range(n):
        votes = [0] * 10
        votes[col[nxt[i]]] = 10
        lines.append(f"Training,x{i}.png," + ",".join(map(str, votes)))
    fp = tmp_path / "fer2013new.csv"
    fp.write_text("\n".join(lines) + "\n")
    val = ds["val"]
    relabelled = Dataset({**ds.splits, "val": Split(val.x, nxt[val.rows], val.rows)}, ds.source, ds.checksum, "csv")
    cfg = _cfg("epochs=6", "optim.lr=0.003", f"data.ferplus={fp}", "augment.mixup=0.2")
    result = fit(cfg, data=relabelled, run_dir=tmp_path / "run", export_onnx=False, evaluate_test=False)
    assert result.metrics["val_acc"] > 0.5
    meta = json.loads((result.artifact_dir / "meta.json").read_text())
    assert meta["config"]["data"]["ferplus"] == str(fp) and meta["config"]["augment"]["mixup"] == 0.2


def test_distillation_learns_the_teachers_answers(session_csv, tmp_path):
    # A teacher trained to answer the *next* class, run through ONNX Runtime as serving runs it, and
    # a student trained on the CSV's own labels with teacher_weight=1: the student scores well on a
    # PublicTest labelled "next class" only if the teacher's answers are what it learnt.
    from fer.data import Dataset, Split, load_dataset

    ds = load_dataset(session_csv, cache_dir=tmp_path / "c")
    shifted = Dataset(
        {k: Split(s.x, (s.y + 1) % 7, s.rows) for k, s in ds.splits.items()}, ds.source, ds.checksum, "csv"
    )
    teacher = fit(_cfg("epochs=6", "optim.lr=0.003"), data=shifted, run_dir=tmp_path / "t", evaluate_test=False)
    assert teacher.metrics["val_acc"] > 0.5
    student_data = Dataset({**ds.splits, "val": shifted["val"]}, ds.source, ds.checksum, "csv")
    # Taught once on the clean faces, then (consistent teaching) on every augmented, mixed batch.
    for consistent, extra in ((False, []), (True, ["data.teacher_consistent=true", "augment.mixup=0.2"])):
        teach = [f"data.teacher={teacher.artifact_dir}", "data.teacher_weight=1", *extra]
        cfg, run = _cfg("epochs=6", "optim.lr=0.003", *teach), tmp_path / f"s{consistent}"
        student = fit(cfg, data=student_data, run_dir=run, export_onnx=False, evaluate_test=False)
        assert student.metrics["val_acc"] > 0.5, consistent
        meta = json.loads((student.artifact_dir / "meta.json").read_text())
        assert meta["config"]["data"]["teacher"] == str(teacher.artifact_dir)
        assert meta["config"]["data"]["teacher_consistent"] is consistent


def test_a_consistent_teacher_answers_the_batch_the_student_sees(session_csv, trained_artifact, tmp_path):
    import torch

    from fer.config import ConfigError
    from fer.data import LABELS, load_dataset
    from fer.device import Batcher
    from fer.distill import ConsistentTeacher
    from fer.inference import Predictor

    faces = load_dataset(session_csv, cache_dir=tmp_path / "c")["train"].x[:40]
    mean, std = 0.47, 0.23  # the student's normalisation, which the teacher must undo
    teacher = ConsistentTeacher(trained_artifact, list(LABELS), 48, 0.5, 1.0, mean, std)
    batch = Batcher(mean, std, torch.device("cpu"), channels_last=True)(faces)
    served = Predictor(trained_artifact, threads=1)
    np.testing.assert_allclose(teacher.probs(batch), served.predict_proba(faces), atol=1e-5)
    # An augmented batch is taught as itself: the mirrored batch gets the mirrored faces' answers.
    mirrored = served.predict_proba(np.ascontiguousarray(faces[:, :, ::-1]))
    np.testing.assert_allclose(teacher.probs(torch.flip(batch, dims=[3])), mirrored, atol=1e-5)
    label = torch.nn.functional.one_hot(torch.zeros(40, dtype=torch.long), 7).float()
    mixed = teacher.mix(batch, label).numpy()
    np.testing.assert_allclose(mixed, 0.5 * label.numpy() + 0.5 * teacher.probs(batch), atol=1e-6)
    with pytest.raises(ConfigError, match="40 px"):  # a crop-40 student cannot be taught by a 48 px teacher
        ConsistentTeacher(trained_artifact, list(LABELS), 40, 0.5, 1.0, mean, std)


def test_a_teacher_with_other_labels_is_refused(session_csv, trained_artifact, tmp_path):
    from fer.config import ConfigError
    from fer.data import LABELS, load_dataset
    from fer.distill import teacher_targets

    ds = load_dataset(session_csv, cache_dir=tmp_path / "c")
    train = ds["train"]
    base = np.eye(7, dtype=np.float32)[train.y]
    half = teacher_targets(trained_artifact, train.x, base, list(LABELS), 0.5)
    np.testing.assert_allclose(half.sum(1), 1, atol=1e-5)
    assert (half >= 0.5 * base).all()  # the label keeps its half
    with pytest.raises(ConfigError, match="answers"):
        teacher_targets(trained_artifact, train.x, base, list(reversed(LABELS)), 0.5)


def test_a_distillation_temperature_softens_the_teacher_and_keeps_its_order(session_csv, trained_artifact, tmp_path):
    from fer.data import LABELS, load_dataset
    from fer.distill import teacher_targets

    train = load_dataset(session_csv, cache_dir=tmp_path / "c")["train"]
    zero = np.zeros((len(train.x), 7), np.float32)  # weight 1 below: the targets are the teacher alone
    served = teacher_targets(trained_artifact, train.x, zero, list(LABELS), 1.0)
    soft = teacher_targets(trained_artifact, train.x, zero, list(LABELS), 1.0, temperature=3.0)
    np.testing.assert_allclose(soft.sum(1), 1, atol=1e-5)
    entropy = lambda p: -(p * np.log(p + 1e-12)).sum(1)  # noqa: E731
    assert (entropy(soft) >= entropy(served) - 1e-5).all() and entropy(soft).mean() > entropy(served).mean() + 0.1
    assert (soft.argmax(1) == served.argmax(1)).all()  # flatter, in the same order
    # softmax(log p / T) is p^(1/T), renormalised
    want = served ** (1 / 3) / (served ** (1 / 3)).sum(1, keepdims=True)
    np.testing.assert_allclose(soft, want, rtol=1e-4, atol=1e-6)
