"""Evaluation metrics on known answers, FER+ join by row position, and report files."""

from __future__ import annotations

import numpy as np
import pytest

from fer.evaluate import calibration, classification_metrics, ferplus_majority, save_report

LABELS = ["a", "b", "c"]


def test_metrics_on_a_known_case():
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    probs = np.eye(3)[pred] * 0.7 + 0.1
    m = classification_metrics(y, probs, LABELS)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["b"]["recall"] == 1.0
    f1s = [0.5, 0.8, 2 / 3]
    assert m["macro_f1"] == pytest.approx(np.mean(f1s))
    # Confidence 0.8 everywhere, accuracy 4/6: ECE = |0.8 - 0.667|.
    assert m["ece"] == pytest.approx(0.8 - 4 / 6)


def test_perfect_calibration_has_zero_ece():
    rng = np.random.default_rng(0)
    n = 20000
    conf = rng.uniform(0.5, 1.0, n)
    correct = rng.uniform(size=n) < conf
    y = np.zeros(n, dtype=int)
    probs = np.stack([np.where(correct, conf, 1 - conf), np.where(correct, 1 - conf, conf)], 1)
    ece, bins = calibration(y, probs, n_bins=10)
    assert ece < 0.02 and sum(b["count"] for b in bins) == n


def test_ferplus_majority_join_by_position(tmp_path):
    header = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
    rows = [
        "Training,fer0000000.png,0,10,0,0,0,0,0,0,0,0",  # happy
        "Training,,4,0,0,0,6,0,0,0,0,0",  # angry (empty image name still joins by position)
        "Training,fer0000002.png,0,0,0,0,0,0,0,0,0,10",  # not a face -> excluded
        "Training,fer0000003.png,5,5,0,0,0,0,0,0,0,0",  # tie -> excluded
        "Training,fer0000004.png,1,0,0,0,0,0,0,9,0,0",  # contempt -> excluded
    ]
    p = tmp_path / "fer2013new.csv"
    p.write_text(header + "\n" + "\n".join(rows) + "\n")
    label, valid = ferplus_majority(p, np.array([0, 1, 2, 3, 4]))
    assert valid.tolist() == [True, True, False, False, False]
    assert label[:2].tolist() == [3, 0]
    label, valid = ferplus_majority(p, np.array([1]))
    assert label.tolist() == [0] and valid.tolist() == [True]


def test_report_files(tmp_path):
    y = np.array([0, 1, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2]])
    m = classification_metrics(y, probs, LABELS)
    paths = save_report(m, LABELS, tmp_path / "report", "test")
    for p in paths.values():
        assert p.is_file() and p.stat().st_size > 40
    assert paths["confusion_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
