"""Training throughput of fer's pipeline vs a naive baseline, in one run on one machine.

fer: uint8 images in memory, one vectorised augmentation pass per batch, bf16 autocast and
channels-last where the CPU supports them. Baseline: the textbook recipe, per-sample PIL transforms
(rotation, flip, brightness) in a standard DataLoader with 2 workers, fp32.

    python benchmarks/train_throughput.py [--data PATH] [--batches 60] [--arch resnet18]

Prints images/s for both and their ratio, and the cost of each architecture variant.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F


def images(data: str | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    if data or os.environ.get("FER_DATA"):
        from fer.data import load_dataset

        train = load_dataset(data)["train"]
        return train.x[:n], train.y[:n]
    rng = np.random.default_rng(0)  # throughput does not depend on pixel content
    return rng.integers(0, 256, (n, 48, 48), dtype=np.uint8), rng.integers(0, 7, n)


def step_fn(model, opt, bf16: bool):
    def step(x, y):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def bench_fer(x, y, arch: str, batches: int, bs: int) -> float:
    from fer.augment import BatchAugment
    from fer.config import AugmentConfig
    from fer.device import Batcher, use_bf16
    from fer.model import build_model

    bf16 = use_bf16("auto", torch.device("cpu"))
    model = build_model(arch).to(memory_format=torch.channels_last).train()
    step = step_fn(model, torch.optim.AdamW(model.parameters(), 1e-3), bf16)
    batcher = Batcher(0.5, 0.25, torch.device("cpu"), True, BatchAugment(AugmentConfig(), torch.Generator()))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))

    def run(n):
        for i in range(n):
            idx = order[(i * bs) % (len(y) - bs) :][:bs]
            step(batcher(x[idx]), torch.from_numpy(y[idx]))

    run(3)  # warm-up
    t = time.perf_counter()
    run(batches)
    return batches * bs / (time.perf_counter() - t)


def bench_naive(x, y, arch: str, batches: int, bs: int) -> float:
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms as T

    from fer.model import build_model

    tf = T.Compose(
        [
            T.RandomRotation(15),
            T.RandomHorizontalFlip(),
            T.ColorJitter(brightness=0.25),
            T.ToTensor(),
            T.Normalize([0.5], [0.25]),
        ]
    )

    class PilData(Dataset):
        def __len__(self):
            return len(y)

        def __getitem__(self, i):
            return tf(Image.fromarray(x[i])), int(y[i])

    loader = DataLoader(PilData(), batch_size=bs, shuffle=True, num_workers=2, drop_last=True, persistent_workers=True)
    model = build_model(arch).train()
    step = step_fn(model, torch.optim.AdamW(model.parameters(), 1e-3), bf16=False)
    it = iter(loader)
    for _ in range(3):
        step(*next(it))
    t = time.perf_counter()
    for _ in range(batches):
        step(*next(it))
    return batches * bs / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--archs", default="resnet18,resnet18_s2,resnet18_cifar", help="variants to cost ('' to skip)")
    args = ap.parse_args()
    x, y = images(args.data, 28709)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    naive = bench_naive(x, y, args.arch, args.batches, args.batch_size)
    fer = bench_fer(x, y, args.arch, args.batches, args.batch_size)
    print(f"{args.arch}: naive (PIL per sample, DataLoader, fp32): {naive:7.1f} images/s")
    print(f"{args.arch}: fer (batch augmentation, bf16, channels-last): {fer:7.1f} images/s")
    print(
        f"speed-up: {fer / naive:.2f}x; one FER-2013 epoch (28,709 images): "
        f"{28709 / naive:.0f} s vs {28709 / fer:.0f} s"
    )
    for arch in filter(None, args.archs.split(",")):
        n = max(5, args.batches // (8 if arch.endswith("cifar") else 2))
        ips = bench_fer(x, y, arch, n, args.batch_size)
        print(f"cost {arch:16s} {ips:7.1f} images/s  ({28709 / ips / 60:.1f} min/epoch)")


if __name__ == "__main__":
    main()
