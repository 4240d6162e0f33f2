"""Evaluation metrics (accuracy, macro-F1, per-class, confusion, calibration) and report files."""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from fer.data import FERPLUS_COLUMNS

log = logging.getLogger(__name__)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def classification_metrics(
    y_true: np.ndarray, probs: np.ndarray, labels: list[str] | tuple[str, ...], n_bins: int = 15
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1, confusion matrix and ECE.

    Args:
        y_true: (N,) integer labels.
        probs: (N, C) class probabilities.
        labels: class names in index order.
        n_bins: confidence bins for expected calibration error.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = probs.argmax(1)
    n = len(labels)
    cm = confusion_matrix(y_true, y_pred, n)
    tp = np.diag(cm).astype(float)
    precision = np.divide(tp, cm.sum(0), out=np.zeros(n), where=cm.sum(0) > 0)
    recall = np.divide(tp, cm.sum(1), out=np.zeros(n), where=cm.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n), where=(precision + recall) > 0)
    present = cm.sum(1) > 0
    ece, bins = calibration(y_true, probs, n_bins)
    return {
        "n": len(y_true),
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            lab: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(cm[i].sum()),
            }
            for i, lab in enumerate(labels)
        },
        "confusion_matrix": cm.tolist(),
        "ece": ece,
        "reliability": bins,
    }


def calibration(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> tuple[float, list[dict]]:
    """Expected calibration error (top-1, equal-width bins) and the per-bin table behind it."""
    conf = probs.max(1)
    correct = probs.argmax(1) == y_true
    edges = np.linspace(0, 1, n_bins + 1)
    ece, bins = 0.0, []
    for lo, hi in itertools.pairwise(edges):
        m = (conf > lo) & (conf <= hi)
        if not m.any():
            continue
        acc, avg_conf = float(correct[m].mean()), float(conf[m].mean())
        ece += m.mean() * abs(acc - avg_conf)
        bins.append({"lo": float(lo), "hi": float(hi), "count": int(m.sum()), "accuracy": acc, "confidence": avg_conf})
    return float(ece), bins


def ferplus_majority(path: Path, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FER+ majority-vote labels (in FER-2013 order) for the given CSV row positions.

    Returns the labels and a mask of rows whose majority is one of our 7 emotions (not contempt,
    unknown or not-a-face, and not a tie). Joined by row position, as the data README requires.
    """
    import csv

    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        idx = [header.index(c) for c in FERPLUS_COLUMNS]
        all_cols = list(range(2, len(header)))
        votes_ours, votes_all = [], []
        for row in reader:
            votes_all.append([int(row[i] or 0) for i in all_cols])
            votes_ours.append([int(row[i] or 0) for i in idx])
    ours = np.asarray(votes_ours)[rows]
    everything = np.asarray(votes_all)[rows]
    top = everything.max(1)
    label = ours.argmax(1)
    # Valid: the overall maximum is one of our classes and unique.
    valid = (ours.max(1) == top) & ((everything == top[:, None]).sum(1) == 1) & (top > 0)
    return label, valid


def save_report(metrics: dict[str, Any], labels: list[str], out_dir: Path, title: str) -> dict[str, Path]:
    """Write metrics.json, confusion_matrix.{json,png} and reliability.png into `out_dir`."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": out_dir / "metrics.json",
        "confusion_json": out_dir / "confusion_matrix.json",
        "confusion_png": out_dir / "confusion_matrix.png",
        "reliability_png": out_dir / "reliability.png",
    }
    paths["metrics"].write_text(json.dumps(metrics, indent=2))
    paths["confusion_json"].write_text(json.dumps({"labels": list(labels), "matrix": metrics["confusion_matrix"]}))

    cm = np.asarray(metrics["confusion_matrix"], dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(
                j,
                i,
                f"{int(cm[i, j])}\n{norm[i, j]:.0%}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}: accuracy {metrics['accuracy']:.1%}, macro-F1 {metrics['macro_f1']:.3f}")
    fig.tight_layout()
    fig.savefig(paths["confusion_png"], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    bins = metrics["reliability"]
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.bar(
        [(b["lo"] + b["hi"]) / 2 for b in bins],
        [b["accuracy"] for b in bins],
        width=1 / max(len(bins), 1) * 0.9 if bins else 0.05,
        alpha=0.7,
        label="accuracy",
    )
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", color="C1", label="observed")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}: ECE {metrics['ece']:.3f}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(paths["reliability_png"], dpi=110)
    plt.close(fig)
    return paths


def evaluate_split(predictor, split, policy=None, ferplus: Path | None = None) -> dict[str, Any]:
    """Metrics of a `Predictor` on a data split; with `ferplus`, accuracy against the FER+ majority too.

    The predictor runs its artifact's test-time policy (as serving does) unless `policy` overrides it.
    """
    policy = policy or predictor.policy
    probs = predictor.predict_proba(split.x, policy=policy)
    metrics = classification_metrics(split.y, probs, predictor.labels)
    metrics["policy"] = policy.model_dump(mode="json")
    if ferplus is not None:
        fp_label, valid = ferplus_majority(Path(ferplus), split.rows)
        pred = probs.argmax(1)
        metrics["ferplus"] = {
            "accuracy": float((pred[valid] == fp_label[valid]).mean()) if valid.any() else 0.0,
            "n": int(valid.sum()),
            "agreement_fer2013_vs_ferplus": float((split.y[valid] == fp_label[valid]).mean()),
        }
    return metrics


def gate_metrics(artifact: Path | str, ds) -> dict[str, float]:
    """What the promotion gate compares when it measures (`gate_measured`): PublicTest accuracy,
    macro-F1 and ECE through the artifact's policy, and accuracy on a feedback hold-out if any."""
    from fer.inference import Predictor

    predictor = Predictor(artifact, threads=0)
    m = evaluate_split(predictor, ds["val"])
    out = {"val_acc": m["accuracy"], "val_f1": m["macro_f1"], "val_ece": m["ece"]}
    if "feedback" in ds.splits and len(ds["feedback"]):
        out["feedback_acc"] = evaluate_split(predictor, ds["feedback"])["accuracy"]
    return out


def measure_artifact(artifact: Path, ds, previous_key: str):
    """Replace an artifact's val/test metrics with those of its own model.onnx; keep the old ones.

    Used after export and quantisation, so the numbers an artifact ships are those of the file
    that serves. Returns the updated `ArtifactMeta` (also written to the folder).
    """
    from fer.artifact import read_meta, write_meta
    from fer.inference import Predictor

    predictor = Predictor(artifact, threads=0)
    meta = read_meta(artifact)
    metrics = dict(meta.metrics)
    for split in ("val", "test"):
        if split in ds.splits:
            m = evaluate_split(predictor, ds[split])
            metrics |= {f"{split}_acc": m["accuracy"], f"{split}_f1": m["macro_f1"], f"{split}_ece": m["ece"]}
    meta.metrics_measured = {"source": "onnxruntime on this model.onnx", previous_key: dict(meta.metrics)}
    meta.metrics = metrics
    write_meta(artifact, meta)
    return meta
