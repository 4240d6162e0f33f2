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


def save_last(
    run_dir: Path, *, model, optimizer, scheduler, epoch: int, history: list[dict[str, float]], best_acc: float,
    best_epoch: int, mean: float, std: float, config: dict[str, Any], rng, gen: torch.Generator,
) -> None:  # fmt: skip
    """Everything `restore_last` needs to continue after `epoch` (0-based) as if never stopped.

    The random generators travel too: a resumed run draws the same augmentations and batch order
    as an uninterrupted one.
    """
    _atomic_save({
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None, "epoch": epoch,
        "history": history, "best_acc": best_acc, "best_epoch": best_epoch, "mean": mean, "std": std,
        "config": config, "np_rng": rng.bit_generator.state, "torch_rng": gen.get_state(),
    }, run_dir / LAST)  # fmt: skip


def restore_last(ckpt: dict[str, Any], model, optimizer, scheduler, rng, gen: torch.Generator):
    """Puts a `last.pt` state back into a run's objects, the inverse of `save_last`.

    Returns:
        (history, best_acc, best_epoch, the next epoch to run), all 0-based like `save_last`'s.
    """
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler"):
        scheduler.load_state_dict(ckpt["scheduler"])
    rng.bit_generator.state = ckpt["np_rng"]
    gen.set_state(ckpt["torch_rng"])
    return ckpt["history"], ckpt["best_acc"], ckpt["best_epoch"], ckpt["epoch"] + 1


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
