"""The training pipeline (`fer pipeline`): data -> [tune] -> train -> [quantize] -> [fuse] -> evaluate ->
model tests -> register -> promote (train and quantize once per member when fine-tuning an ensemble).

Each step has explicit inputs and outputs and is cached by the hash of its inputs (its own
settings and the hashes of what it consumes), so a re-run after a change re-executes only the
steps that change reaches. One YAML file drives it (experiments/pipeline.yaml). Promotion goes
through the registry's gate, model tests included; a refused candidate stays registered.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import Field

from fer.artifact import ONNX_FILE, read_meta
from fer.config import ConfigError, StrictModel, load_train_config

log = logging.getLogger(__name__)


class PipelineConfig(StrictModel):
    name: str = "fer-resnet18"  # the registered model's name
    data: str | None = None  # FER-2013 CSV(.gz) or image folders (else --data / FER_DATA)
    feedback: str | None = None  # an exported feedback dataset (fer feedback export) merged into Training
    train_config: str = "baseline.yaml"  # relative to this file
    train: list[str] = []  # --set style overrides of the train config
    # Optional tuning before training: a study YAML (experiments/tune.yaml style, relative to this
    # file) run on the pipeline's train config; its best lr, batch size and optimizer (and any
    # other searched values) become train overrides (`train` still wins where it sets the same).
    tune: str | None = None
    tune_set: list[str] = []  # --set style overrides of the study, e.g. ["trials=10"]
    # Fine-tune instead of training from scratch: "production" (this name's production version),
    # a name@version, or an artifact folder. An int8 version fine-tunes its fp32 parent.
    init: str | None = None
    # int8 candidate (fer.quantize, calibrated on 1,000 Training images): it goes on when its
    # PublicTest accuracy is within quantize_tolerance of the fp32 network's, else the fp32 one does.
    quantize: bool = False
    quantize_tolerance: float = Field(0.003, ge=0)
    ferplus: str | None = None  # fer2013new.csv, for the clear-faces model test
    model_tests_limit: int = Field(2000, ge=10)
    registry: str | None = None  # writable registry folder (else FER_REGISTRY_DIR)
    promote: bool = True  # through the gate: refused candidates stay registered, not promoted
    output_dir: str = "runs/pipeline"


def load_pipeline_config(path: Path | str, overrides: list[str] | None = None) -> tuple[PipelineConfig, Path]:
    from fer.config import apply_overrides

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"pipeline config not found: {p}")
    raw = apply_overrides(yaml.safe_load(p.read_text()) or {}, overrides or [])
    try:
        return PipelineConfig.model_validate(raw), p.parent
    except Exception as e:  # pydantic's ValidationError, said as a config error
        raise ConfigError(f"invalid pipeline config {p}: {e}") from None


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Step:
    """A cached step: `run(inputs, out_dir) -> outputs` executes only when its key is new."""

    def __init__(self, root: Path, name: str, fn: Callable[[dict, Path], dict]):
        self.root, self.name, self.fn = root, name, fn

    def __call__(self, **inputs: Any) -> dict[str, Any]:
        key = digest({"step": self.name, **inputs})
        out_dir = self.root / "cache" / self.name / key
        done = out_dir / "outputs.json"
        if done.is_file():
            log.info("pipeline step %s: cached (%s)", self.name, key)
            return json.loads(done.read_text()) | {"cached": True}
        tmp = out_dir.with_name(f".{key}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        t0 = time.time()
        outputs = self.fn(inputs, tmp) | {"seconds": round(time.time() - t0, 2)}
        outputs = json.loads(json.dumps(outputs, default=str).replace(str(tmp), str(out_dir)))
        (tmp / "outputs.json").write_text(json.dumps(outputs, indent=2))
        shutil.rmtree(out_dir, ignore_errors=True)
        tmp.rename(out_dir)  # a step is cached only once it finished
        log.info("pipeline step %s: ran in %.1f s (%s)", self.name, outputs["seconds"], key)
        return outputs | {"cached": False}


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
    """`member`, or a copy of it under `out` run as its predecessor was (`policy`: crops, flip, temperature)."""
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
    "evaluate": evaluate_step,
    "model_tests": model_tests_step,
}

# How a step is executed: (root, step name, inputs) -> outputs. The default runs it here, cached;
# the ClearML pipeline (fer.clearml_pipeline) runs each one as a pipeline component.
StepRunner = Callable[[Path, str, dict], dict]


def run_cached(root: Path, name: str, inputs: dict) -> dict[str, Any]:
    return Step(root, name, STEPS[name])(**inputs)


def run_pipeline(cfg: PipelineConfig, base_dir: Path, settings, run_step: StepRunner = run_cached) -> dict[str, Any]:
    """Run every step (each from its cache when its inputs did not change); the summary."""
    from fer.registry import PromotionRefused, open_registry

    def step(name: str, **inputs: Any) -> dict[str, Any]:
        return run_step(root, name, inputs)

    root = Path(cfg.output_dir)
    data = cfg.data or settings.data
    if not data:
        raise ConfigError("no data: set data in the pipeline config, or pass --data / FER_DATA")
    train_config = str((base_dir / cfg.train_config).resolve())
    reg = open_registry(cfg.registry, settings)
    holder = _holder(reg, cfg.name)
    # Fine-tuning an ensemble fine-tunes each member, then fuses them again under its policy.
    inits: list[str | None] = [None]
    start_policy, member_policies = None, []
    if cfg.init:
        from fer.onnx_import import artifact_path, resolve_starts

        ref = f"{cfg.name}@production" if cfg.init == "production" else cfg.init
        starts, start_policy = resolve_starts(ref, reg)
        inits = [str(p.resolve()) for p in starts]
        # How each member is run inside the ensemble, carried to its fine-tuned successor.
        served = [read_meta(artifact_path(m, reg)).policy for m in start_policy.members]
        member_policies = [p.model_dump(include={"crops", "flip", "temperature"}) for p in served]
    d = step("data", data=data, data_sha=_file_hash(data), feedback=cfg.feedback,
             feedback_sha=_file_hash(cfg.feedback) if cfg.feedback else None)  # fmt: skip
    steps, tuned = {"data": d}, []
    if cfg.tune:
        tune_config = str((base_dir / cfg.tune).resolve())
        steps["tune"] = step("tune", data_npz=d["data_npz"], checksum=d["checksum"], tune_config=tune_config,
                             tune_sha=_file_hash(tune_config), tune_set=cfg.tune_set, train_config=train_config,
                             config_sha=_file_hash(train_config), train=cfg.train)  # fmt: skip
        tuned = steps["tune"]["overrides"]
    members = []
    for i, init in enumerate(inits):
        n = "" if i == 0 else f"_{i + 1}"  # steps of the second member on: train_2, quantize_2, ...
        # A member keeps the window it was trained on (a crop-40 network fine-tunes on 40 px crops),
        # whatever the shared fine-tuning config says: the input side belongs to the network.
        own = [f"augment.crop={read_meta(init).policy.crop}"] if init else []
        steps[f"train{n}"] = step("train", data_npz=d["data_npz"], checksum=d["checksum"],
                                  train_config=train_config, config_sha=_file_hash(train_config),
                                  train=[*tuned, *cfg.train, *own], init=init, init_sha=_file_hash(init))  # fmt: skip
        member = steps[f"train{n}"]["artifact"]
        if cfg.quantize:
            steps[f"quantize{n}"] = step("quantize", data_npz=d["data_npz"], checksum=d["checksum"],
                                         artifact=member, tolerance=cfg.quantize_tolerance)  # fmt: skip
            member = steps[f"quantize{n}"]["artifact"]
        members.append(member)
    candidate = members[0]
    if len(members) > 1:
        steps["fuse"] = step("fuse", data_npz=d["data_npz"], checksum=d["checksum"], members=members,
                             policy=start_policy.model_dump(mode="json"), served=member_policies)  # fmt: skip
        candidate = steps["fuse"]["artifact"]
    e = step("evaluate", data_npz=d["data_npz"], checksum=d["checksum"], artifact=candidate,
             baseline=holder and str(holder.path), baseline_ref=holder and holder.ref,
             baseline_sha=holder and _file_hash(str(holder.path)))  # fmt: skip
    mt = step("model_tests", data_npz=d["data_npz"], checksum=d["checksum"], artifact=candidate,
              ferplus=cfg.ferplus, limit=cfg.model_tests_limit)  # fmt: skip
    # A re-run with the same artifact finds its version instead of registering it again.
    mv = next((v for v in reg.list(cfg.name) if v.card.get("source_run") == candidate), None)
    mv = mv or reg.register(cfg.name, Path(candidate), source_run=candidate, tags=["pipeline"])
    summary = {"steps": steps | {"evaluate": e, "model_tests": mt}, "registered": mv.ref}
    if cfg.promote:
        report = json.loads(Path(mt["report"]).read_text())
        try:
            reg.promote(cfg.name, mv.version, model_tests=report, evaluation=e)
            summary["promoted"] = True
        except PromotionRefused as err:
            summary |= {"promoted": False, "refused": str(err)}
    return summary


def _holder(reg, name: str):
    """The version holding production now, or None (a first model, or a new name)."""
    from fer.registry import ModelNotFound

    try:
        return reg.resolve(f"{name}@production")
    except ModelNotFound:
        return None


def _file_hash(path: str | None) -> str | None:
    """Content hash of a file, or of a folder's files (names and bytes)."""
    if not path:
        return None
    from fer.files import sha256_file

    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        h.update(str(f.relative_to(p)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()
