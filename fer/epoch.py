"""One pass over a split: `train_one_epoch` (an optimiser step per batch) and `evaluate_epoch`.

Stateless steps of a model, a split and a `Batcher`; the run around them (seeds, resume,
checkpoints, tracking, the artifact) is `fer.train.fit`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from fer.augment import mixup
from fer.config import TrainConfig
from fer.data import LABELS, Split, iterate_batches, num_batches
from fer.device import Batcher, autocast
from fer.evaluate import classification_metrics
from fer.onnx_import import freeze_batchnorm

if TYPE_CHECKING:
    from fer.distill import ConsistentTeacher


def train_one_epoch(
    model,
    split: Split,
    batcher: Batcher,
    optimizer,
    scheduler,
    cfg: TrainConfig,
    rng: np.random.Generator,
    bf16: bool,
    desc: str = "train",
    targets: np.ndarray | None = None,
    teacher: ConsistentTeacher | None = None,
) -> dict[str, float]:
    """One pass over `split`; `targets` (N, C) are soft labels (FER+ votes) instead of `split.y`.

    With `cfg.augment.mixup`, each batch is blended with a shuffled copy of itself (images and
    target distributions alike). A `teacher` then mixes its answers on the very batch the network
    sees into the targets. Training accuracy counts against the original labels.
    """
    model.train()
    if cfg.init:
        freeze_batchnorm(model)  # a network rebuilt from ONNX has its BatchNorm folded away
    total_loss, correct, seen = 0.0, 0, 0
    steps = num_batches(len(split), cfg.batch_size, drop_last=True)
    bar = tqdm(
        iterate_batches(len(split), cfg.batch_size, True, rng, drop_last=True),
        total=steps,
        desc=desc,
        leave=False,
        dynamic_ncols=True,
        mininterval=1.0,
    )
    alpha = cfg.augment.mixup if cfg.augment.enabled else 0.0
    for idx in bar:
        x = batcher(split.x[idx])
        y = torch.from_numpy(split.y[idx]).to(batcher.device)
        target = y if targets is None else torch.from_numpy(targets[idx]).to(batcher.device)
        if alpha:
            x, target = mixup(x, target, alpha, rng, len(LABELS))
        if teacher is not None:
            target = teacher.mix(x, F.one_hot(target, len(LABELS)).float() if target.dim() == 1 else target)
        with autocast(batcher.device, bf16):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), target, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None and cfg.optim.scheduler == "onecycle":
            scheduler.step()
        n = len(idx)
        total_loss += loss.item() * n
        correct += (logits.argmax(1) == y).sum().item()
        seen += n
        bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
    return {"train_loss": total_loss / max(seen, 1), "train_acc": correct / max(seen, 1)}


@torch.no_grad()
def predict_probs(
    model, x_u8: np.ndarray, batcher: Batcher, batch_size: int, bf16: bool, tta_flip: bool = False
) -> np.ndarray:
    """Class probabilities (N, C) as float32, optionally averaged with the mirrored image."""
    model.eval()
    out = []
    for idx in iterate_batches(len(x_u8), batch_size, shuffle=False):
        x = batcher(x_u8[idx])
        with autocast(batcher.device, bf16):
            p = model(x).float().softmax(1)
            if tta_flip:
                p = (p + model(torch.flip(x, dims=[3])).float().softmax(1)) / 2
        out.append(p.cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(LABELS)), np.float32)


def evaluate_epoch(
    model, split: Split, batcher: Batcher, cfg: TrainConfig, bf16: bool, prefix: str = "val"
) -> tuple[dict[str, float], list[list[int]]]:
    probs = predict_probs(model, split.x, batcher, cfg.eval_batch_size, bf16)
    y = split.y
    eps = 1e-7
    loss = float(-np.log(probs[np.arange(len(y)), y] + eps).mean())
    m = classification_metrics(y, probs, LABELS)
    return (
        {f"{prefix}_loss": loss, f"{prefix}_acc": m["accuracy"], f"{prefix}_f1": m["macro_f1"]},
        m["confusion_matrix"],
    )
