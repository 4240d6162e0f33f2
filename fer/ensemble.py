"""Fuse several artifacts' networks into one ONNX graph that averages their probabilities.

One graph, not N sessions: serving and evaluation stay a single `Predictor` call per batch, and
ONNX Runtime schedules the members together. The fused graph's output `logits` is the log of
the averaged probabilities, so `softmax(logits / T)` (the policy's temperature) applies on top
exactly as for a single network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fer.artifact import ONNX_FILE, ArtifactError, read_meta, write_meta


def _sliced(meta, first) -> bool:
    """Whether `meta`'s centre-crop policy can run inside a graph that gets `first`'s whole-face input."""
    p = meta.policy
    return first.policy.crop in (0, meta.input_size) and p.crops == "center" and 0 < p.crop < meta.input_size


def fuse(members: list[Path], out: Path, refs: list[str] | None = None, name: str | None = None) -> Path:
    """Write `out` (model.onnx + meta.json): the members' networks, probabilities averaged.

    Members must share labels, input size and the crop part of their policy (the views are made
    once, outside the graph), with one exception: when the first member sees the whole face, a
    member trained on centre crops (`crop: 40`, `crops: center`) gets its window cut inside the
    graph, so networks of both kinds can be fused. Each may have its own normalisation: the
    graph takes the first member's and maps it to each other member's with one multiply-add.

    Raises:
        ArtifactError: fewer than two members, or members that disagree on labels, input or crops.
    """
    import onnx
    from onnx import TensorProto, compose, helper, numpy_helper

    if len(members) < 2:
        raise ArtifactError("an ensemble needs at least two members")
    metas = [read_meta(m) for m in members]
    first = metas[0]
    for m, meta in zip(members[1:], metas[1:], strict=True):
        for key in ("labels", "input_size"):
            if getattr(meta, key) != getattr(first, key):
                raise ArtifactError(f"{m}: {key} differs from the first member's")
        if (meta.policy.crop, meta.policy.crops) != (first.policy.crop, first.policy.crops) and not _sliced(
            meta, first
        ):
            raise ArtifactError(
                f"{m}: its crop policy differs from the first member's (only centre-crop members can follow a "
                "whole-face first member)"
            )
    n0 = first.normalize
    nodes, inits, opset, ir_version = [], [], None, None
    probs = []
    for i, (path, meta) in enumerate(zip(members, metas, strict=True)):
        model = onnx.load(str(Path(path) / ONNX_FILE))
        opset, ir_version = opset or model.opset_import, ir_version or model.ir_version
        prefixed = compose.add_prefix(model, f"m{i}_")
        g = prefixed.graph
        inp, logits = g.input[0].name, g.output[0].name
        n = meta.normalize
        # The input is normalised as member 0 expects: x0 = (u*s - m0)/d0. Member i wants
        # xi = (u*s - mi)/di = x0*(d0/di) + (m0 - mi)/di (both with scale 1/255).
        a = np.array(n0.std / n.std, np.float32)
        b = np.array((n0.mean - n.mean) / n.std, np.float32)
        inits += [numpy_helper.from_array(a, f"m{i}__a"), numpy_helper.from_array(b, f"m{i}__b")]
        nodes += [
            helper.make_node("Mul", ["image", f"m{i}__a"], [f"m{i}__scaled"]),
            helper.make_node(
                "Add", [f"m{i}__scaled", f"m{i}__b"], [f"m{i}__normed"] if i and _sliced(meta, first) else [inp]
            ),
        ]
        if i and _sliced(meta, first):
            # The window `fer.policy.views` would cut for this member on its own: the centre c x c.
            c = meta.policy.crop
            o = (meta.input_size - c) // 2
            for key, value in (("starts", [o, o]), ("ends", [o + c, o + c]), ("axes", [2, 3])):
                inits.append(numpy_helper.from_array(np.array(value, np.int64), f"m{i}__{key}"))
            nodes.append(
                helper.make_node("Slice", [f"m{i}__normed", f"m{i}__starts", f"m{i}__ends", f"m{i}__axes"], [inp])
            )
        nodes += list(g.node)
        inits += list(g.initializer)
        nodes.append(helper.make_node("Softmax", [logits], [f"m{i}__probs"], axis=1))
        probs.append(f"m{i}__probs")
    nodes += [helper.make_node("Mean", probs, ["mean_probs"]), helper.make_node("Log", ["mean_probs"], ["logits"])]
    graph = helper.make_graph(
        nodes,
        "fer_ensemble",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, None, None])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(first.labels)])],
        inits,
    )
    fused = helper.make_model(graph, opset_imports=opset, producer_name="fer.ensemble")
    fused.ir_version = ir_version
    onnx.checker.check_model(fused)
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(fused, str(out / ONNX_FILE))
    refs = refs or [str(m) for m in members]
    meta = first.model_copy(deep=True)
    meta.name = name or first.name
    meta.arch = f"ensemble of {len(members)}: " + ", ".join(m.arch for m in metas)
    meta.policy = first.policy.model_copy(update={"temperature": 1.0, "members": refs})
    meta.metrics, meta.history, meta.metrics_measured, meta.quantization = {}, [], None, None
    write_meta(out, meta)
    return out
