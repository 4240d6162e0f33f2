"""The training pipeline (`fer pipeline`): data -> [tune] -> train -> [quantize] -> [fuse | policy] ->
evaluate -> model tests -> register -> promote (train and quantize once per member when fine-tuning
an ensemble; `policy` when fine-tuning one network that serves under more than one plain pass).

Each step has explicit inputs and outputs and is cached by the hash of its inputs (its own
settings and the hashes of what it consumes), so a re-run after a change re-executes only the
steps that change reaches. One YAML file drives it (experiments/pipeline.yaml). Promotion goes
through the registry's gate, model tests included; a refused candidate stays registered.
This module is the order and the cache; what each step computes is in `fer.pipeline_steps`.
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

import yaml
from pydantic import Field

from fer.artifact import Policy, read_meta
from fer.config import ConfigError, StrictModel
from fer.pipeline_steps import STEPS

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
        member_policies = [p.model_dump(include={"crops", "zooms", "flip", "temperature"}) for p in served]
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
    elif start_policy is not None and start_policy != Policy(crop=start_policy.crop):
        # A single network served on several views, with a temperature or an early exit: training
        # leaves its successor on one plain pass, which the gate would then measure against a
        # holder answering from all its views. Run it as its predecessor runs, refitted.
        steps["policy"] = step("policy", data_npz=d["data_npz"], checksum=d["checksum"], artifact=candidate,
                               policy=start_policy.model_dump(mode="json"))  # fmt: skip
        candidate = steps["policy"]["artifact"]
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
