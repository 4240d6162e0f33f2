"""A training run's checkpoints: `last.pt` (everything needed to resume) and `best.pt` (weights).

Both are written atomically after each epoch; a finished run drops them, since its artifact holds
the best weights and nothing is left to resume (`keep_checkpoints: true` keeps them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

LAST, BEST = "last.pt", "best.pt"


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)  # a kill never leaves half a file


def save_last(run_dir: Path, state: dict[str, Any]) -> None:
    _atomic_save(state, run_dir / LAST)


def save_best(run_dir: Path, weights: dict[str, torch.Tensor]) -> None:
    _atomic_save(weights, run_dir / BEST)


def load_checkpoint(resume: Path | str) -> tuple[dict[str, Any], Path]:
    """The `last.pt` state of a run folder (or that file itself) and the run folder.

    Raises:
        FileNotFoundError: there is nothing to resume.
    """
    resume = Path(resume)
    path = resume / LAST if resume.is_dir() else resume
    if not path.is_file():
        raise FileNotFoundError(f"nothing to resume: {path} does not exist")
    return torch.load(path, map_location="cpu", weights_only=False), path.parent


def load_best(run_dir: Path) -> dict[str, torch.Tensor] | None:
    path = Path(run_dir) / BEST
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def drop_checkpoints(run_dir: Path) -> None:
    for name in (LAST, BEST):
        (Path(run_dir) / name).unlink(missing_ok=True)
