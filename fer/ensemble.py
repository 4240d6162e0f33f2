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
from fer.policy import windows as policy_windows
from fer.policy import zoom_matrix

# The policy fields that decide a member's views (made outside the graph, so shared, unless cut inside).
VIEW_KEYS = {"crop", "crops", "zooms", "flip"}


def _whole(meta) -> bool:
    """Whether `meta`'s policy is one plain pass over the whole face (nothing to cut)."""
    return meta.policy.crop in (0, meta.input_size) and meta.policy.views == 1


def _views_inside(metas) -> bool:
    """Whether the members' views are cut inside the graph: they differ, so they cannot be shared.

    Members with the same views have them made once, outside the graph (the fused policy keeps
    them); members with different ones each get theirs cut inside, from the one whole face.
    """
    first = metas[0].policy.model_dump(include=VIEW_KEYS)
    return any(m.policy.model_dump(include=VIEW_KEYS) != first for m in metas[1:])


def _view_nodes(i: int, meta, src: str, dst: str) -> tuple[list, list]:
    """Nodes that cut member `i`'s views from its normalised whole face `src` into one batch `dst`.

    The same windows, in the same order, as `fer.policy.views` cuts for this member on its own:
    the centre (and with `crops: five` the four corners), each followed by its zoomed copies with
    `zooms` (two MatMuls by the zoom matrix), then their mirror images with `flip`.
    """
    from onnx import helper, numpy_helper

    c, offsets = policy_windows(meta.input_size, meta.policy)
    nodes, inits, windows = [], [], []
    if c == meta.input_size:  # the whole face is its one window (a whole-face member with mirrors)
        windows, offsets = [src], []

    def const(name: str, value: list[int]) -> str:
        inits.append(numpy_helper.from_array(np.array(value, np.int64), f"m{i}__{name}"))
        return f"m{i}__{name}"

    axes = const("axes", [2, 3]) if offsets else None
    for k, (y, x) in enumerate(offsets):
        starts, ends = const(f"starts{k}", [y, x]), const(f"ends{k}", [y + c, x + c])
        nodes.append(helper.make_node("Slice", [src, starts, ends, axes], [f"m{i}__win{k}"]))
        windows.append(f"m{i}__win{k}")
    if meta.policy.zooms:
        for j, factor in enumerate(meta.policy.zooms):
            z = zoom_matrix(c, factor)
            inits += [numpy_helper.from_array(a, f"m{i}__zoom{j}{t}") for a, t in ((z, ""), (z.T.copy(), "T"))]
        zoomed = []
        for w in windows:
            zoomed.append(w)
            for j in range(len(meta.policy.zooms)):
                nodes.append(helper.make_node("MatMul", [f"m{i}__zoom{j}", w], [f"{w}__z{j}rows"]))
                nodes.append(helper.make_node("MatMul", [f"{w}__z{j}rows", f"m{i}__zoom{j}T"], [f"{w}__z{j}"]))
                zoomed.append(f"{w}__z{j}")
        windows = zoomed
    if meta.policy.flip:
        # Slice with step -1 over the width: from the last column through the first.
        rev = [const("rev_starts", [-1]), const("rev_ends", [-(2**63)]), const("rev_axes", [3]), const("rev", [-1])]
        for w in list(windows):
            nodes.append(helper.make_node("Slice", [w, *rev], [f"{w}__mirror"]))
            windows.append(f"{w}__mirror")
    if len(windows) == 1:  # one window, cut by a Slice (a whole single view is never cut)
        nodes[-1].output[0] = dst
    else:
        nodes.append(helper.make_node("Concat", windows, [dst], axis=0))  # views stacked along the batch
    return nodes, inits


def _view_mean(i: int, views: int, n_labels: int, src: str, dst: str, opset: int) -> tuple[list, list]:
    """(views x N, C) probabilities -> (N, C): the views' average, as `fer.policy.combine` takes it."""
    from onnx import helper, numpy_helper

    shape = numpy_helper.from_array(np.array([views, -1, n_labels], np.int64), f"m{i}__vshape")
    nodes = [helper.make_node("Reshape", [src, shape.name], [f"m{i}__vprobs"])]
    inits = [shape]
    if opset >= 18:  # ReduceMean takes its axes as an input from opset 18 on
        axes = numpy_helper.from_array(np.array([0], np.int64), f"m{i}__vaxes")
        inits.append(axes)
        nodes.append(helper.make_node("ReduceMean", [f"m{i}__vprobs", axes.name], [dst], keepdims=0))
    else:
        nodes.append(helper.make_node("ReduceMean", [f"m{i}__vprobs"], [dst], axes=[0], keepdims=0))
    return nodes, inits


def fuse(members: list[Path], out: Path, refs: list[str] | None = None, name: str | None = None) -> Path:
    """Write `out` (model.onnx + meta.json): the members' networks, probabilities averaged.

    Members must share labels and input size. When they also share their views (crop windows and
    mirrors), the views are made once, outside the graph, and the fused policy keeps them. When
    they differ, the graph takes the whole face and cuts each member's views itself, as that
    member's own policy cuts them (its centre window, or five windows with `crops: five`, their
    zooms, and their mirrors with `flip`), and averages them there; the fused policy is then one plain pass.
    So networks trained on crops and on whole faces, with and without mirrors, can be fused.
    Each may have its own normalisation: the graph takes the first member's and maps it to each
    other member's with one multiply-add, and its own temperature, so that the graph is exactly
    the average of what each member answers alone. The ensemble's temperature (1 here; `fer
    calibrate` fits it) applies once more, on top of the average.

    Raises:
        ArtifactError: fewer than two members, or members that disagree on labels or input size.
    """
    import onnx
    from onnx import TensorProto, compose, helper, numpy_helper

    if len(members) < 2:
        raise ArtifactError("an ensemble needs at least two members")
    metas = [read_meta(m) for m in members]
    first = metas[0]
    for m, meta in zip(members, metas, strict=True):
        if meta.policy.early_exit:  # a graph runs every member on every face: it cannot stop early
            raise ArtifactError(
                f"{m} exits early (policy.early_exit): fuse the version it was calibrated from, "
                "then give the fused model an early exit with `fer calibrate --exit-views`"
            )
    for m, meta in zip(members[1:], metas[1:], strict=True):
        for key in ("labels", "input_size"):
            if getattr(meta, key) != getattr(first, key):
                raise ArtifactError(f"{m}: {key} differs from the first member's")
    inside = _views_inside(metas)
    n0 = first.normalize
    nodes, inits, opset, ir_version = [], [], None, None
    probs = []
    for i, (path, meta) in enumerate(zip(members, metas, strict=True)):
        model = onnx.load(str(Path(path) / ONNX_FILE))
        opset, ir_version = opset or model.opset_import, ir_version or model.ir_version
        prefixed = compose.add_prefix(model, f"m{i}_")
        g = prefixed.graph
        inp, logits = g.input[0].name, g.output[0].name
        n, sliced = meta.normalize, inside and not _whole(meta)
        # The input is normalised as member 0 expects: x0 = (u*s - m0)/d0. Member i wants
        # xi = (u*s - mi)/di = x0*(d0/di) + (m0 - mi)/di (both with scale 1/255).
        a = np.array(n0.std / n.std, np.float32)
        b = np.array((n0.mean - n.mean) / n.std, np.float32)
        inits += [numpy_helper.from_array(a, f"m{i}__a"), numpy_helper.from_array(b, f"m{i}__b")]
        nodes += [
            helper.make_node("Mul", ["image", f"m{i}__a"], [f"m{i}__scaled"]),
            helper.make_node("Add", [f"m{i}__scaled", f"m{i}__b"], [f"m{i}__normed" if sliced else inp]),
        ]
        if sliced:
            more_nodes, more_inits = _view_nodes(i, meta, f"m{i}__normed", inp)
            nodes, inits = nodes + more_nodes, inits + more_inits
        nodes += list(g.node)
        inits += list(g.initializer)
        if meta.policy.temperature != 1.0:  # the member counts as it answers alone: calibrated
            inits.append(numpy_helper.from_array(np.array(meta.policy.temperature, np.float32), f"m{i}__t"))
            nodes.append(helper.make_node("Div", [logits, f"m{i}__t"], [f"m{i}__tempered"]))
            logits = f"m{i}__tempered"
        views = meta.policy.views if sliced else 1
        nodes.append(helper.make_node("Softmax", [logits], [f"m{i}__probs" if views == 1 else f"m{i}__vflat"], axis=1))
        if views > 1:
            version = next(o.version for o in opset if o.domain in ("", "ai.onnx"))
            more_nodes, more_inits = _view_mean(i, views, len(first.labels), f"m{i}__vflat", f"m{i}__probs", version)
            nodes, inits = nodes + more_nodes, inits + more_inits
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
    outer = {"crop": 0, "crops": "center", "zooms": [], "flip": False} if inside else {}  # views cut inside: one pass
    meta.policy = first.policy.model_copy(update={**outer, "temperature": 1.0, "members": refs})
    meta.metrics, meta.history, meta.metrics_measured, meta.quantization = {}, [], None, None
    write_meta(out, meta)
    return out
