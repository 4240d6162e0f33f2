"""Optimisers and learning-rate schedules named in a run config (`optim:` section)."""

from __future__ import annotations

import torch

from fer.config import TrainConfig


def build_optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD with Nesterov momentum, from `cfg.optim`."""
    o = cfg.optim
    if o.name == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=True
        )
    cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)


def build_scheduler(optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """The LR schedule of `cfg.optim.scheduler`; OneCycle steps per batch, the others per epoch."""
    o = cfg.optim
    if o.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=o.lr, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch, pct_start=o.warmup_fraction
        )
    if o.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if o.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, cfg.epochs // 3), gamma=0.1)
    if o.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=2)
    return None
