"""Where and how training runs: the device, bf16 autocast, seeds, and uint8 batches to tensors."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from fer.augment import BatchAugment


def select_device(name: str) -> torch.device:
    """`auto`: CUDA, else Apple MPS, else the CPU; any other name as torch spells it."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def use_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast where the hardware runs it natively (AVX-512 bf16 / AMX CPUs, Ampere+ GPUs)."""
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; the generator returned drives augmentation."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


class Batcher:
    """Turns uint8 arrays into normalised float batches on the device, augmenting when asked."""

    def __init__(
        self,
        mean: float,
        std: float,
        device: torch.device,
        channels_last: bool,
        augment: BatchAugment | None = None,
        center_crop: int = 0,
    ):
        self.mean, self.std, self.device = mean, std, device
        self.center_crop = center_crop  # evaluation of a network trained on random crops
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.augment = augment

    def __call__(self, x_u8: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(x_u8).to(self.device, non_blocking=True).unsqueeze(1).float().div_(255)
        if self.augment is not None:
            x = self.augment(x)
        c, side = self.center_crop, x.shape[-1]
        if 0 < c < side:
            o = (side - c) // 2
            x = x[..., o : o + c, o : o + c]
        return ((x - self.mean) / self.std).contiguous(memory_format=self.fmt)


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on `device`, or nothing."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
