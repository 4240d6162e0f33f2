"""Feedback over real HTTP with the real model: stored as crop + answer + label, never the photo;
every refusal a clear 4xx (or 507); then exported as a dataset that training reads."""

from __future__ import annotations

import json
import time

import numpy as np
from conftest import EXAMPLES
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from fer.config import Settings
from fer.serving.app import create_app


def client(shipped_service, tmp_path, **kw):
    settings = Settings(ui=False, feedback_dir=str(tmp_path / "feedback"), **kw)
    return TestClient(create_app(settings, service=shipped_service))


def predict(c, name="group.jpg"):
    return c.post("/predict", files={"file": (name, (EXAMPLES / name).read_bytes(), "image/jpeg")}).json()


def test_a_correction_is_stored_as_crop_answer_and_label_only(shipped_service, tmp_path):
    with client(shipped_service, tmp_path) as c:
        answer = predict(c)
        r = c.post("/feedback", json={"prediction_id": answer["prediction_id"], "face": 1, "label": "sad"})
        assert r.status_code == 200, r.text
        assert r.json() == {"stored": True, "agreed": answer["faces"][1]["emotion"] == "sad",
                            "predicted": answer["faces"][1]["emotion"], "label": "sad"}  # fmt: skip
        assert c.post("/feedback", json={"prediction_id": answer["prediction_id"], "face": 0,
                                         "label": answer["faces"][0]["emotion"]}).json()["agreed"] is True  # fmt: skip
        metrics = c.get("/metrics").text
    assert 'fer_feedback_total{agreed="true"} 1.0' in metrics
    store = tmp_path / "feedback"
    records = [json.loads(line) for line in (store / "feedback.jsonl").read_text().splitlines()]
    assert [(r["face"], r["label"]) for r in records] == [(1, "sad"), (0, answer["faces"][0]["emotion"])]
    assert set(records[0]) == {"time", "prediction_id", "face", "crop", "model", "predicted", "label", "agreed"}
    files = sorted(p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file() and p.name != ".lock")
    assert files == sorted(["feedback.jsonl", *(f"crops/{r['crop']}" for r in records)])  # no photo anywhere
    assert all(Image.open(store / "crops" / r["crop"]).size == (48, 48) for r in records)


def test_refusals(shipped_service, tmp_path):
    with client(shipped_service, tmp_path, feedback_window_s=0.2, feedback_max_records=1) as c:
        pid = predict(c)["prediction_id"]
        assert c.post("/feedback", json={"prediction_id": pid, "face": 7, "label": "sad"}).json()["error"] == "bad_face"
        bad = c.post("/feedback", json={"prediction_id": pid, "label": "bored"})
        assert bad.status_code == 400 and "happy" in bad.json()["detail"]
        assert c.post("/feedback", json={"prediction_id": pid, "label": "sad"}).status_code == 200
        full = c.post("/feedback", json={"prediction_id": pid, "label": "fear"})
        assert full.status_code == 507 and full.json()["error"] == "feedback_store_full"
        time.sleep(0.3)
        gone = c.post("/feedback", json={"prediction_id": pid, "label": "sad"})
        assert gone.status_code == 404 and gone.json()["error"] == "unknown_prediction"
    with TestClient(create_app(Settings(ui=False), service=shipped_service)) as c:  # off by default
        assert predict(c)["prediction_id"] is None
        off = c.post("/feedback", json={"prediction_id": "x", "label": "sad"})
        assert off.status_code == 403 and off.json()["error"] == "feedback_disabled"


def test_export_makes_a_dataset_that_training_reads(shipped_service, tmp_path):
    from fer.cli import app
    from fer.config import load_train_config
    from fer.data import load_dataset
    from fer.train import fit

    labels = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    with client(shipped_service, tmp_path) as c:
        for i, name in enumerate(["group.jpg", "astronaut.jpg", "grace_hopper.jpg"] * 3):
            answer = predict(c, name)
            for face in range(answer["face_count"]):
                c.post("/feedback", json={"prediction_id": answer["prediction_id"], "face": face,
                                          "label": labels[(i + face) % 7]})  # fmt: skip
    out = tmp_path / "dataset"
    r = CliRunner().invoke(app, ["feedback", "export", "--feedback-dir", str(tmp_path / "feedback"), "--out", str(out),
                                 "--holdout", "0.3"])  # fmt: skip
    assert r.exit_code == 0, r.output
    crops = sorted(out.rglob("*.png"))
    assert len(crops) == 5 and len({p.name for p in crops}) == 5  # 5 distinct faces, each once
    assert {p.parent.parent.name for p in crops} <= {"train", "test"}
    ds = load_dataset(out)
    # Which part a crop lands in follows from its hash: with 5 crops the held-out part may be empty.
    assert ds.layout == "folders" and sum(len(ds[s]) for s in ds.splits) == 5
    assert np.asarray(Image.open(crops[0])).shape == (48, 48)
    cfg = load_train_config(None, ["epochs=1", "batch_size=2", "model.arch=tiny", "precision=fp32"])
    assert fit(cfg, data=ds, run_dir=tmp_path / "run", export_onnx=False).metrics["epochs_run"] == 1
