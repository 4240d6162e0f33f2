"""What each step of the training pipeline computes (`fer.pipeline` runs them, in order and cached).

A step is a function `(inputs, out_dir) -> outputs`: plain JSON-able inputs (settings, paths and
the hashes of what it consumes) in, JSON-able outputs out, its files written under `out_dir`.
Nothing here knows about caching, ordering or ClearML: `fer.pipeline` decides when a step runs,
and `fer.clearml_pipeline` may run the same function as a pipeline component elsewhere.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fer.artifact import ONNX_FILE, read_meta
from fer.config import ConfigError, load_train_config


def data_step(inputs: dict, out: Path) -> dict:
    """Load (and check) FER-2013, merge feedback crops into Training, save the arrays."""
    from fer.data import Split, load_dataset

    ds = load_dataset(inputs["data"])
    for name in ("train", "val"):
        if name not in ds.splits or len(ds[name]) == 0:
            raise ConfigError(f"{inputs['data']}: the {name} split is empty")
    train, merged, arrays = ds["train"], 0, {}
    if inputs.get("feedback"):
        fb = load_dataset(inputs["feedback"], val_fraction=0.2)
        parts = [fb[s] for s in ("train", "val") if s in fb.splits]  # feedback's own test part stays out
        if "test" in fb.splits:  # ... and is what the gate measures candidates on
            arrays = {f"feedback_{k}": getattr(fb["test"], k) for k in ("x", "y", "rows")}
        merged = sum(len(p) for p in parts)
        # Feedback rows get numbers no FER-2013 row has, so joins by row never mistake them.
        train = Split(
            np.concatenate([train.x, *(p.x for p in parts)]),
            np.concatenate([train.y, *(p.y for p in parts)]),
            np.concatenate([train.rows, *(p.rows + 10_000_000 for p in parts)]),
        )
    arrays |= {f"{s}_{k}": getattr(split, k) for s, split in (("train", train), ("val", ds["val"]))
               for k in ("x", "y", "rows")}  # fmt: skip
    if "test" in ds.splits:
        arrays |= {f"test_{k}": getattr(ds["test"], k) for k in ("x", "y", "rows")}
    np.savez(out / "data.npz", **arrays)
    return {"data_npz": str(out / "data.npz"), "checksum": ds.checksum, "train_size": len(train),
            "feedback_merged": merged, "feedback_holdout": len(arrays.get("feedback_y", [])),
            "class_counts": train.class_counts()}  # fmt: skip


def _dataset(npz: str, checksum: str):
    from fer.data import Dataset, Split

    with np.load(npz) as z:
        splits = {s: Split(z[f"{s}_x"], z[f"{s}_y"], z[f"{s}_rows"])
                  for s in ("train", "val", "test", "feedback") if f"{s}_x" in z}  # fmt: skip
    return Dataset(splits, npz, checksum, "pipeline")


def tune_step(inputs: dict, out: Path) -> dict:
    """An Optuna study over the train config (fer.tune), on the pipeline's data; its best values."""
    import optuna

    from fer.config import save_config
    from fer.tune import load_tune_config, run_study, suggest

    base = out / "base.yaml"  # the pipeline's train config as resolved: what the trials vary
    save_config(load_train_config(inputs["train_config"], inputs["train"]), base)
    cfg = load_tune_config(inputs["tune_config"], [*inputs["tune_set"], f"base_config={base}", f"output_dir={out}"])
    result = run_study(cfg, data=_dataset(inputs["data_npz"], inputs["checksum"]))
    best = suggest(optuna.trial.FixedTrial(result.best_params), cfg)
    return {"best_value": result.best_value, "best_params": result.best_params, "overrides": best,
            "complete": result.n_complete, "pruned": result.n_pruned}  # fmt: skip


def train_step(inputs: dict, out: Path) -> dict:
    from fer.train import fit

    cfg = load_train_config(inputs["train_config"], inputs["train"])
    if inputs.get("init"):
        cfg = cfg.model_copy(update={"init": inputs["init"]})
    r = fit(cfg, data=_dataset(inputs["data_npz"], inputs["checksum"]), run_dir=out / "run")
    return {"artifact": str(r.artifact_dir), "metrics": r.metrics}


def quantize_step(inputs: dict, out: Path) -> dict:
    """int8 of the trained network; the candidate is it, or the fp32 network where int8 loses accuracy."""
    from fer.evaluate import gate_metrics, measure_artifact
    from fer.quantize import quantize_artifact

    ds = _dataset(inputs["data_npz"], inputs["checksum"])
    train = ds["train"]
    pick = np.random.default_rng(0).choice(len(train), min(1000, len(train)), replace=False)
    int8 = quantize_artifact(Path(inputs["artifact"]), out / "artifact", train.x[pick], parent=inputs["artifact"])
    # The int8 card then holds the int8 file's own numbers; the fp32 file is measured the same way.
    int8_acc = measure_artifact(int8, ds, "parent_training_time").metrics["val_acc"]
    fp32_acc = gate_metrics(inputs["artifact"], ds)["val_acc"]
    keep = int8_acc >= fp32_acc - inputs["tolerance"]
    return {"artifact": str(int8) if keep else inputs["artifact"], "kept": "int8" if keep else "fp32",
            "fp32_val_acc": fp32_acc, "int8_val_acc": int8_acc}  # fmt: skip


def _served_as(member: Path, policy: dict, out: Path) -> Path:
    """`member`, or a copy of it under `out` run as its predecessor was (`policy`: crops, zooms, flip, temperature)."""
    from fer.artifact import write_meta

    meta = read_meta(member)
    if all(getattr(meta.policy, k) == v for k, v in policy.items()):
        return member
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(member / ONNX_FILE, out / ONNX_FILE)
    write_meta(out, meta.model_copy(update={"policy": meta.policy.model_copy(update=policy)}))
    return out


def fuse_step(inputs: dict, out: Path) -> dict:
    """The fine-tuned members fused into one graph (fer.ensemble) under the ensemble's test-time
    policy (crops, flips), its temperature fitted again on PublicTest (fer.calibrate).

    Each member is run as its predecessor was inside the ensemble (a crop-40 member's five
    windows, its temperature): fine-tuning trains a network, it does not change how it is run.
    """
    from fer.artifact import Policy
    from fer.calibrate import calibrate_artifact
    from fer.ensemble import fuse

    served = inputs.get("served") or [{} for _ in inputs["members"]]
    pairs = enumerate(zip(inputs["members"], served, strict=True))
    members = [_served_as(Path(m), p, out / f"member{i}") for i, (m, p) in pairs]
    fused = fuse(members, out / "fused", refs=inputs["members"])
    policy = Policy.model_validate(inputs["policy"] | {"members": inputs["members"]})
    ds = _dataset(inputs["data_npz"], inputs["checksum"])
    r = calibrate_artifact(fused, out / "artifact", ds, parent="fused members", policy=policy)
    return {"artifact": str(out / "artifact"), "temperature": r["temperature"], "val_ece": r["val_ece_after"],
            "members": [str(m) for m in members]}  # fmt: skip


def policy_step(inputs: dict, out: Path) -> dict:
    """One fine-tuned network under its predecessor's test-time policy (views, early exit), each
    temperature fitted again on PublicTest (fer.calibrate), so the gate compares like with like.
    """
    from fer.artifact import Policy
    from fer.calibrate import calibrate_artifact

    policy = Policy.model_validate(inputs["policy"])
    ds = _dataset(inputs["data_npz"], inputs["checksum"])
    r = calibrate_artifact(Path(inputs["artifact"]), out / "artifact", ds, parent="fine-tuned network", policy=policy)
    return {"artifact": str(out / "artifact"), "temperature": r["temperature"], "val_ece": r["val_ece_after"],
            "exit_temperature": r["exit_temperature"], "val_exit_share": r["val_exit_share"]}  # fmt: skip


def evaluate_step(inputs: dict, out: Path) -> dict:
    """The candidate and the model it would replace, measured here on the same data.

    Stored metrics come from different machines (int8 answers depend on the CPU), so the gate
    compares these instead: FER-2013 validation and, when there is feedback, its hold-out part.
    """
    from fer.evaluate import gate_metrics

    ds = _dataset(inputs["data_npz"], inputs["checksum"])
    result = {"candidate": gate_metrics(inputs["artifact"], ds)}
    if inputs.get("baseline"):
        result["baseline"] = gate_metrics(inputs["baseline"], ds) | {"ref": inputs["baseline_ref"]}
    return result


def model_tests_step(inputs: dict, out: Path) -> dict:
    from fer.inference import Predictor
    from fer.modeltests import run_model_tests

    ds = _dataset(inputs["data_npz"], inputs["checksum"])
    ferplus = Path(inputs["ferplus"]) if inputs.get("ferplus") else None
    report = run_model_tests(Predictor(inputs["artifact"], threads=0), ds["val"], ferplus, inputs["limit"])
    (out / "model_tests.json").write_text(json.dumps(report, indent=2))
    return {"passed": report["passed"], "failed": report["failed"], "report": str(out / "model_tests.json")}


STEPS: dict[str, Callable[[dict, Path], dict]] = {
    "data": data_step,
    "tune": tune_step,
    "train": train_step,
    "quantize": quantize_step,
    "fuse": fuse_step,
    "policy": policy_step,
    "evaluate": evaluate_step,
    "model_tests": model_tests_step,
}
