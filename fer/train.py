"""A training run: `fit` (seeds, resume, checkpoints, tracking, the artifact) around `fer.epoch`'s passes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from fer.artifact import ONNX_FILE, ArtifactMeta, Normalize, Policy
from fer.augment import BatchAugment
from fer.checkpoint import drop_checkpoints, load_best, load_checkpoint, restore_last, save_best, save_last
from fer.config import TrainConfig, save_config
from fer.data import (
    LABELS,
    Dataset,
    Split,
    load_dataset,
    num_batches,
    soft_targets,
    stratified_indices,
)
from fer.device import Batcher, seed_everything, select_device, use_bf16
from fer.epoch import evaluate_epoch, train_one_epoch
from fer.files import sha256_file
from fer.model import build_model, clean_state_dict, code_state, save_artifact
from fer.onnx_import import init_network
from fer.optim import build_optimizer, build_scheduler
from fer.tracking import NullTracker, Tracker

log = logging.getLogger(__name__)

# A callback gets (epoch, metrics) after each epoch and returns True to stop training (pruning).
EpochCallback = Callable[[int, dict[str, float]], bool | None]


@dataclass
class FitResult:
    run_dir: Path
    artifact_dir: Path
    metrics: dict[str, Any]
    interrupted: bool = False


def default_run_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.output_dir) / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _prepare(cfg: TrainConfig, data: Dataset | None, data_path: str | None) -> tuple[Dataset, Split, Split]:
    data = data or load_dataset(data_path or cfg.data.path, cfg.data.val_fraction, cfg.data.seed)
    train = data["train"]
    if cfg.data.subset < 1.0:
        train = train.subset(stratified_indices(train.y, cfg.data.subset, cfg.data.seed))
    return data, train, data["val"]


def _targets(cfg: TrainConfig, data: Dataset, train: Split) -> np.ndarray | None:
    """Soft training targets (N, C) when FER+ votes or a teacher make them; None trains on the labels."""
    targets = soft_targets(data, train, Path(cfg.data.ferplus), cfg.data.ferplus_weight) if cfg.data.ferplus else None
    if cfg.data.teacher and not cfg.data.teacher_consistent:  # a consistent teacher answers per batch
        from fer.distill import teacher_targets

        base = targets if targets is not None else np.eye(len(LABELS), dtype=np.float32)[train.y]
        d = cfg.data
        targets = teacher_targets(Path(d.teacher), train.x, base, list(LABELS), d.teacher_weight, d.teacher_temperature)
    return targets


def _consistent_teacher(cfg: TrainConfig, train: Split, mean: float, std: float):
    """`data.teacher_consistent`'s per-batch teacher, taking the student's input (its crop, if any)."""
    if not (cfg.data.teacher and cfg.data.teacher_consistent):
        return None
    from fer.distill import ConsistentTeacher

    side = train.x.shape[-1]
    size = cfg.augment.crop if 0 < cfg.augment.crop < side else side
    d = cfg.data
    return ConsistentTeacher(Path(d.teacher), list(LABELS), size, d.teacher_weight, d.teacher_temperature, mean, std)


def fit(
    cfg: TrainConfig,
    *,
    data: Dataset | None = None,
    data_path: str | None = None,
    tracker: Tracker | None = None,
    callbacks: list[EpochCallback] | None = None,
    run_dir: Path | None = None,
    resume: Path | None = None,
    evaluate_test: bool = True,
    export_onnx: bool = True,
    checkpoints: bool = True,
) -> FitResult:
    """Train a model as `cfg` says and write a run directory with the best checkpoint's artifact.

    Args:
        cfg: validated run config.
        data: an already loaded dataset (tuning reuses one); otherwise read from `data_path`/config.
        tracker: receives config, per-epoch metrics, the confusion matrix and the artifact.
        callbacks: called after each epoch with the metrics; returning True stops the run.
        run_dir: output folder; default `<cfg.output_dir>/<name>-<timestamp>`.
        resume: a run folder (or its `last.pt`) to continue from.
        evaluate_test: report the best checkpoint on the test split (PrivateTest) once at the end.
        export_onnx: also write the ONNX export into the artifact.
        checkpoints: write best.pt/last.pt every epoch (resumable); tuning trials keep the best
            weights in memory instead, which saves ~180 MB of writes per epoch.
    """
    tracker = tracker or NullTracker()
    ckpt = None
    if resume is not None:
        ckpt, run_dir = load_checkpoint(resume)
        # The schedule (OneCycle's total steps) is fixed at the start: a resumed run keeps its config.
        cfg = TrainConfig.model_validate(ckpt["config"])
        log.info("resuming %s from epoch %d of %d", run_dir, ckpt["epoch"] + 2, cfg.epochs)
    data, train, val = _prepare(cfg, data, data_path)
    targets = _targets(cfg, data, train)
    gen = seed_everything(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = select_device(cfg.device)
    bf16 = use_bf16(cfg.precision, device)

    run_dir = Path(run_dir or default_run_dir(cfg))
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")

    # Normalisation statistics come from the training images and travel in the artifact's meta.
    mean = float(train.x.mean() / 255) if ckpt is None else ckpt["mean"]
    std = float(train.x.std() / 255) if ckpt is None else ckpt["std"]
    if cfg.init:
        model, parent = init_network(cfg, list(LABELS))
        mean, std = parent.normalize.mean, parent.normalize.std  # what the network learnt on
        model = model.to(device)
    else:
        parent = None
        model = build_model(cfg.model.arch, len(LABELS), cfg.model.pretrained, cfg.model.dropout).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    steps = num_batches(len(train), cfg.batch_size, drop_last=True)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps)
    history: list[dict[str, float]] = []
    best_acc, best_epoch, start_epoch = -1.0, -1, 0
    best_state: dict[str, torch.Tensor] = {}
    if ckpt is not None:
        history, best_acc, best_epoch, start_epoch = restore_last(ckpt, model, optimizer, scheduler, rng, gen)
        best_state = load_best(run_dir) or best_state

    teacher = _consistent_teacher(cfg, train, mean, std)
    augment = BatchAugment(cfg.augment, gen)
    train_batcher = Batcher(mean, std, device, cfg.channels_last, augment)
    eval_batcher = Batcher(mean, std, device, cfg.channels_last, center_crop=cfg.augment.crop)
    version, diff = code_state()
    if diff:  # uncommitted changes: keep them with the run, so its code can be rebuilt
        (run_dir / "code.diff").write_text(diff)
    run_info = {
        "data_sha256": data.checksum,
        "code_version": version,
        "train_size": len(train),
        "device": str(device),
        "bf16": bf16,
    }
    tracker.start(
        project="fer",
        name=run_dir.name,
        tags=[cfg.name, cfg.model.arch],
        config={**cfg.model_dump(mode="json"), "run": run_info},
    )
    log.info(
        "training %s on %s (bf16=%s): %d train / %d val images, %d epochs",
        cfg.model.arch,
        device,
        bf16,
        len(train),
        len(val),
        cfg.epochs,
    )

    interrupted, status, t0 = False, "completed", time.time()
    # A resumed run's training time includes the epochs it restored, as their own records give it.
    earlier_s = sum(h["epoch_time_s"] for h in history)
    finished = False  # the schedule ran out or early stopping ended it: nothing left to resume
    epoch_bar = tqdm(
        range(start_epoch, cfg.epochs), desc="epochs", initial=start_epoch, total=cfg.epochs, dynamic_ncols=True
    )
    try:
        for epoch in epoch_bar:
            te = time.time()
            metrics = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
            metrics |= train_one_epoch(
                model,
                train,
                train_batcher,
                optimizer,
                scheduler,
                cfg,
                rng,
                bf16,
                desc=f"epoch {epoch + 1}/{cfg.epochs}",
                targets=targets,
                teacher=teacher,
            )
            val_m, cm = evaluate_epoch(model, val, eval_batcher, cfg, bf16)
            metrics |= val_m | {"epoch_time_s": time.time() - te}
            if scheduler is not None and cfg.optim.scheduler == "plateau":
                scheduler.step(metrics["val_acc"])
            elif scheduler is not None and cfg.optim.scheduler != "onecycle":
                scheduler.step()
            history.append(metrics)
            tracker.log_metrics(metrics, step=epoch + 1)
            improved = metrics["val_acc"] > best_acc
            if improved:
                best_acc, best_epoch = metrics["val_acc"], epoch
                best_state = {k: v.detach().clone() for k, v in clean_state_dict(model.state_dict()).items()}
                if checkpoints:
                    save_best(run_dir, best_state)
                tracker.log_confusion_matrix(cm, list(LABELS), step=epoch + 1)
            if checkpoints:
                save_last(
                    run_dir, model=model, optimizer=optimizer, scheduler=scheduler, epoch=epoch, history=history,
                    best_acc=best_acc, best_epoch=best_epoch, mean=mean, std=std,
                    config=cfg.model_dump(mode="json"), rng=rng, gen=gen,
                )  # fmt: skip
            epoch_bar.set_postfix(
                loss=f"{metrics['train_loss']:.3f}", val_acc=f"{metrics['val_acc']:.3f}", best=f"{best_acc:.3f}"
            )
            # Four significant digits, not four decimals: a OneCycle epoch starts at peak/25 (8e-06
            # for a 2e-4 peak), which four decimals print as 0.0.
            shown = {k: v if isinstance(v, int) else float(f"{v:.4g}") for k, v in metrics.items()}
            log.info("epoch %d: %s", epoch + 1, shown)
            stop = any(cb(epoch + 1, metrics) for cb in (callbacks or []))
            if cfg.early_stopping and epoch - best_epoch >= cfg.early_stopping:
                log.info("early stopping: no val_acc gain for %d epochs", cfg.early_stopping)
                stop, finished = True, True
            if stop:
                break
        else:
            finished = True
    except KeyboardInterrupt:
        # Ctrl-C keeps what was learnt: the artifact is built from the best checkpoint so far.
        interrupted, status = True, "interrupted"
        log.warning("interrupted: building the artifact from the best checkpoint (epoch %d)", best_epoch + 1)
    finally:
        epoch_bar.close()
    if best_epoch < 0:
        tracker.finish("failed" if not interrupted else "interrupted")
        raise RuntimeError("training stopped before the first epoch finished: no checkpoint to keep")

    model.load_state_dict(best_state)
    final = {k: v for k, v in history[best_epoch].items() if k.startswith("val_")}
    final |= {"best_epoch": best_epoch + 1, "epochs_run": len(history), "train_time_s": earlier_s + time.time() - t0}
    if evaluate_test and "test" in data.splits:
        test_m, _ = evaluate_epoch(model, data["test"], eval_batcher, cfg, bf16, prefix="test")
        final |= test_m
    meta = ArtifactMeta(
        name=cfg.name,
        arch=cfg.model.arch,
        labels=list(LABELS),
        input_size=48,
        channels=1,
        normalize=Normalize(mean=mean, std=std, scale=1 / 255),
        dropout=cfg.model.dropout,
        metrics=final,
        history=history,
        config=cfg.model_dump(mode="json"),
        data={
            "source": Path(data.source).name,
            "layout": data.layout,
            "sha256": data.checksum,
            "train_size": len(train),
        },
        code_version=run_info["code_version"],
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        device=str(device),
        bf16=bf16,
        torch=torch.__version__,
        # A network trained on random crops is evaluated (above) and served on the centre crop.
        policy=Policy(crop=cfg.view_crop),
        fine_tuned_from=None
        if parent is None
        else {"artifact": cfg.init, "name": parent.name, "onnx_sha256": sha256_file(Path(cfg.init) / ONNX_FILE)},
    )
    artifact_dir = save_artifact(model.float(), meta, run_dir / "artifact", onnx=export_onnx)
    if finished and not cfg.keep_checkpoints:
        drop_checkpoints(run_dir)
    tracker.log_artifact(artifact_dir, cfg.name, meta)
    tracker.finish(status)
    log.info("best val_acc %.4f at epoch %d; artifact in %s", best_acc, best_epoch + 1, artifact_dir)
    return FitResult(run_dir, artifact_dir, final, interrupted)
