"""Data exploration and error analysis used by the notebooks (they call these and hold no logic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fer.data import LABELS, Dataset, Split, load_dataset

DEFAULT_DATA = (
    Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "fer2013" / "fer2013_reconstructed.csv.gz"
)


def demo_dataset(n_per_class: int = 30, seed: int = 0) -> Dataset:
    """A small synthetic stand-in (class-specific blobs) for running the notebooks without FER-2013."""
    rng = np.random.default_rng(seed)
    splits = {}
    for k, name in enumerate(("train", "val", "test")):
        y = np.repeat(np.arange(len(LABELS)), n_per_class // (1 + k))
        x = rng.integers(0, 60, size=(len(y), 48, 48)).astype(np.int32)
        for i, c in enumerate(y):
            r, col = 6 + (c // 3) * 14, 6 + (c % 3) * 14
            x[i, r : r + 12, col : col + 12] += 180
        splits[name] = Split(np.clip(x, 0, 255).astype(np.uint8), y, np.arange(len(y)))
    return Dataset(splits, "synthetic", "0" * 64, "synthetic")


def load_or_demo(path: str | Path | None = None) -> tuple[Dataset, bool]:
    """FER-2013 from `path` (a notebook passes `FER_DATA`) or ../shared; the synthetic set when none exists.

    Returns (data, real).
    """
    for candidate in (path, DEFAULT_DATA):
        if candidate and Path(candidate).exists():
            return load_dataset(candidate), True
    return demo_dataset(), False


def class_balance(data: Dataset) -> dict[str, dict[str, int]]:
    """Images per class in each split."""
    return {name: dict(zip(LABELS, s.class_counts(), strict=True)) for name, s in data.splits.items()}


def duplicate_groups(x: np.ndarray) -> list[np.ndarray]:
    """Groups (index arrays) of pixel-identical images, largest first."""
    keys = np.array([hash(img.tobytes()) for img in x])
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    groups = [np.flatnonzero(inverse == g) for g in np.flatnonzero(counts > 1)]
    return sorted(groups, key=len, reverse=True)


def cross_split_duplicates(data: Dataset, a: str = "train", b: str = "test") -> int:
    """How many images of split `b` also appear pixel-for-pixel in split `a`."""
    return int(in_split(data, a, b).sum())


def in_split(data: Dataset, a: str = "train", b: str = "test") -> np.ndarray:
    """Boolean mask over split `b`: the images that also appear pixel-for-pixel in split `a`."""
    seen = {img.tobytes() for img in data[a].x}
    return np.array([img.tobytes() in seen for img in data[b].x], dtype=bool)


def blank_images(x: np.ndarray, max_std: float = 1.0) -> np.ndarray:
    """Indices of (near-)uniform images: black frames and 'image not available' fills."""
    return np.flatnonzero(x.reshape(len(x), -1).std(axis=1) <= max_std)


def sample_grid(split: Split, per_class: int = 8, seed: int = 0):
    """A matplotlib figure: `per_class` random images per emotion, one row each."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(LABELS), per_class, figsize=(per_class * 1.1, len(LABELS) * 1.2))
    for c, label in enumerate(LABELS):
        idx = np.flatnonzero(split.y == c)
        pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        for j in range(per_class):
            ax = axes[c, j]
            ax.axis("off")
            if j < len(pick):
                ax.imshow(split.x[pick[j]], cmap="gray", vmin=0, vmax=255)
        axes[c, 0].set_title(label, loc="left", fontsize=9)
    fig.tight_layout()
    return fig


def most_confident_mistakes(probs: np.ndarray, y: np.ndarray, k: int = 12) -> np.ndarray:
    """Indices of the `k` wrong predictions with the highest confidence."""
    wrong = np.flatnonzero(probs.argmax(1) != y)
    return wrong[np.argsort(-probs[wrong].max(1))][:k]


def mistakes_grid(split: Split, probs: np.ndarray, idx: np.ndarray, cols: int = 6):
    import matplotlib.pyplot as plt

    rows = max(1, int(np.ceil(len(idx) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.9), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, idx, strict=False):
        ax.imshow(split.x[i], cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"true {LABELS[split.y[i]]}\npred {LABELS[probs[i].argmax()]} {probs[i].max():.0%}", fontsize=8)
    fig.tight_layout()
    return fig


def per_class_calibration(probs: np.ndarray, y: np.ndarray, n_bins: int = 10) -> dict[str, float]:
    """ECE of the top-1 prediction, restricted to images predicted as each class."""
    from fer.evaluate import calibration

    pred = probs.argmax(1)
    out = {}
    for c, label in enumerate(LABELS):
        m = pred == c
        out[label] = calibration(y[m], probs[m], n_bins)[0] if m.any() else float("nan")
    return out
