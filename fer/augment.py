"""Batch augmentation on tensors: one vectorised pass per batch, so 2 CPU cores are never data-bound.

Per-sample PIL transforms in DataLoader workers cost more CPU than the ResNet-18 step itself at
48x48; doing the same geometry with one `affine_grid`/`grid_sample` call per batch is ~free.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fer.config import AugmentConfig


class BatchAugment:
    """Random rotation/scale/shift, horizontal flip, brightness, contrast and erasing on a batch.

    Input and output: float tensors (B, 1, H, W) with values in [0, 1].
    """

    def __init__(self, cfg: AugmentConfig, generator: torch.Generator | None = None):
        self.cfg = cfg
        self.g = generator

    def _u(self, n: int, lo: float, hi: float, device) -> torch.Tensor:
        return torch.rand(n, generator=self.g).to(device) * (hi - lo) + lo

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        if not c.enabled:
            return x
        b, dev = x.shape[0], x.device
        side = x.shape[-1]
        crop = c.crop if 0 < c.crop < side else side
        # A random crop is the same affine map shrunk to crop/side and shifted anywhere inside.
        frac = crop / side
        angle = self._u(b, -c.rotation, c.rotation, dev) * (math.pi / 180)
        scale = self._u(b, 1 - c.scale, 1 + c.scale, dev)
        flip = torch.where(self._u(b, 0, 1, dev) < c.hflip, -1.0, 1.0)
        tx, ty = self._u(b, -c.translate, c.translate, dev) * 2, self._u(b, -c.translate, c.translate, dev) * 2
        if crop < side:
            tx = tx + self._u(b, frac - 1, 1 - frac, dev)
            ty = ty + self._u(b, frac - 1, 1 - frac, dev)
        cos, sin = torch.cos(angle) / scale * frac, torch.sin(angle) / scale * frac
        # affine_grid maps output coords to input coords; the flip negates the x column.
        theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
        grid = F.affine_grid(theta, [b, x.shape[1], crop, crop], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        if c.contrast > 0:
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * self._u(b, 1 - c.contrast, 1 + c.contrast, dev).view(b, 1, 1, 1) + mean
        if c.brightness > 0:
            x = x + self._u(b, -c.brightness, c.brightness, dev).view(b, 1, 1, 1)
        x = x.clamp(0, 1)
        if c.erasing > 0:
            x = self._erase(x)
        return x

    def _erase(self, x: torch.Tensor) -> torch.Tensor:
        # One box per chosen image, 2-20% of the area, filled with noise (as in Zhong et al. 2017).
        b, _, h, w = x.shape
        dev = x.device
        chosen = self._u(b, 0, 1, dev) < self.cfg.erasing
        area = self._u(b, 0.02, 0.2, dev) * h * w
        ratio = torch.exp(self._u(b, math.log(0.3), math.log(3.3), dev))
        eh = (area * ratio).sqrt().clamp(1, h)
        ew = (area / ratio).sqrt().clamp(1, w)
        y0 = self._u(b, 0, 1, dev) * (h - eh)
        x0 = self._u(b, 0, 1, dev) * (w - ew)
        rows = torch.arange(h, device=dev).view(1, h, 1)
        cols = torch.arange(w, device=dev).view(1, 1, w)
        box = (
            (rows >= y0.view(b, 1, 1))
            & (rows < (y0 + eh).view(b, 1, 1))
            & (cols >= x0.view(b, 1, 1))
            & (cols < (x0 + ew).view(b, 1, 1))
            & chosen.view(b, 1, 1)
        ).unsqueeze(1)
        noise = torch.rand(x.shape, generator=self.g).to(dev)
        return torch.where(box, noise, x)


def mixup(
    x: torch.Tensor, target: torch.Tensor, alpha: float, rng, n_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """mixup (Zhang et al. 2018): blend the batch with a shuffled copy of itself, images and targets.

    `target` is (B,) class indices or (B, C) distributions; the result is always (B, C). The
    weight comes from Beta(alpha, alpha) and the shuffle from `rng` (the run's numpy generator),
    so a resumed run mixes the same batches.
    """
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(len(x))).to(x.device)
    if target.dim() == 1:
        target = F.one_hot(target, n_classes).float()
    return lam * x + (1 - lam) * x[perm], lam * target + (1 - lam) * target[perm]
