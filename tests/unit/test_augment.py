"""Batch augmentation: shapes, ranges, determinism and that each transform does something."""

from __future__ import annotations

from conftest import require_module

torch = require_module("torch", "training (requirements.txt)")

from fer.augment import BatchAugment
from fer.config import AugmentConfig


def _batch():
    return torch.rand(32, 1, 48, 48, generator=torch.Generator().manual_seed(0))


def test_shape_range_and_change():
    x = _batch()
    y = BatchAugment(AugmentConfig(), torch.Generator().manual_seed(1))(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= 0 and y.max() <= 1
    assert (y - x).abs().mean() > 0.05


def test_seeded_is_reproducible():
    x = _batch()
    a = BatchAugment(AugmentConfig(), torch.Generator().manual_seed(7))(x)
    b = BatchAugment(AugmentConfig(), torch.Generator().manual_seed(7))(x)
    assert torch.equal(a, b)


def test_disabled_is_identity():
    x = _batch()
    assert torch.equal(BatchAugment(AugmentConfig(enabled=False))(x), x)


def test_flip_only_mirrors_exactly():
    cfg = AugmentConfig(rotation=0, hflip=1.0, brightness=0, contrast=0, scale=0, translate=0, erasing=0)
    x = _batch()
    torch.testing.assert_close(BatchAugment(cfg)(x), torch.flip(x, dims=[3]), atol=1e-5, rtol=0)


def test_no_op_config_is_identity():
    cfg = AugmentConfig(rotation=0, hflip=0, brightness=0, contrast=0, scale=0, translate=0, erasing=0)
    x = _batch()
    torch.testing.assert_close(BatchAugment(cfg)(x), x, atol=1e-5, rtol=0)


def test_brightness_shifts_mean():
    cfg = AugmentConfig(rotation=0, hflip=0, brightness=0.3, contrast=0, scale=0, translate=0, erasing=0)
    x = torch.full((256, 1, 48, 48), 0.5)
    y = BatchAugment(cfg, torch.Generator().manual_seed(0))(x)
    shifts = y.mean(dim=(1, 2, 3)) - 0.5
    assert shifts.abs().max() <= 0.3 + 1e-6 and shifts.std() > 0.1


def test_erasing_replaces_a_box():
    cfg = AugmentConfig(rotation=0, hflip=0, brightness=0, contrast=0, scale=0, translate=0, erasing=1.0)
    x = torch.zeros(16, 1, 48, 48)
    y = BatchAugment(cfg, torch.Generator().manual_seed(0))(x)
    changed = (y != 0).float().mean(dim=(1, 2, 3))
    assert (changed > 0.01).all() and (changed < 0.25).all()


def test_random_crops_are_windows_of_the_face():
    # A smooth ramp: any 40x40 window of it is recognisable, so each crop can be located.
    r, c = torch.arange(48.0).view(48, 1), torch.arange(48.0).view(1, 48)
    x = ((r * 0.7 + c * 1.3) / 100).expand(16, 1, 48, 48).clone()
    off = AugmentConfig(rotation=0, hflip=0, brightness=0, contrast=0, scale=0, translate=0, erasing=0, crop=40)
    y = BatchAugment(off, torch.Generator().manual_seed(3))(x)
    assert y.shape == (16, 1, 40, 40)
    offsets = set()
    for i in range(16):
        err, dy, dx = min(
            ((x[i, 0, a : a + 40, b : b + 40] - y[i, 0]).abs().mean().item(), a, b) for a in range(9) for b in range(9)
        )
        assert err < 0.01  # the same pixels, up to sub-pixel interpolation
        offsets.add((dy, dx))
    assert len(offsets) > 4  # and from many places, not always the centre


def test_mixup_blends_images_and_targets_by_one_weight():
    import numpy as np

    from fer.augment import mixup

    x, y = _batch(), torch.arange(32) % 7
    mixed, target = mixup(x, y, 0.4, np.random.default_rng(3), 7)
    assert target.shape == (32, 7)
    torch.testing.assert_close(target.sum(1), torch.ones(32))
    # Replay the draw: the images and the targets are blended with the same weight and partner.
    rng = np.random.default_rng(3)
    lam, perm = rng.beta(0.4, 0.4), rng.permutation(32)
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[perm])
    onehot = torch.nn.functional.one_hot(y, 7).float()
    torch.testing.assert_close(target, lam * onehot + (1 - lam) * onehot[perm])
    # Soft targets (FER+ votes) mix the same way and stay distributions.
    soft = torch.softmax(torch.randn(32, 7, generator=torch.Generator().manual_seed(0)), 1)
    _, mixed_soft = mixup(x, soft, 0.4, np.random.default_rng(3), 7)
    torch.testing.assert_close(mixed_soft, lam * soft + (1 - lam) * soft[perm])
