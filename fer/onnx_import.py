"""A torch network from a served artifact's ONNX graph, to fine-tune a registered model.

Registry versions keep only `model.onnx` (no torch weights): the shipped registry would otherwise
carry ~45 MB more per version. fer's own export (`model.export_onnx`, eval mode) folds each
BatchNorm into the convolution before it, so the graph holds one weight and one bias per
convolution and the head's Gemm. `network_from_onnx` rebuilds the artifact's architecture, copies
those weights in (through the fp16 Casts of the shipped files) and sets every
BatchNorm to the identity plus the folded bias, then checks that torch and ONNX Runtime agree on
a batch before returning. Such a network has no batch statistics left to learn from: fine-tune it
with its BatchNorm layers frozen (`freeze_batchnorm`), as detection fine-tuning does.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fer.artifact import ONNX_FILE, ArtifactError, ArtifactMeta, Policy, read_meta
from fer.model import build_model, view_size

log = logging.getLogger(__name__)

# fp16 weights (the shipped files) move logits by ~1e-3; anything near 1e-1 is a wrong mapping.
AGREEMENT_TOL = 2e-2


def _weights_by_node(onnx_path: Path) -> list[tuple[str, list[np.ndarray]]]:
    """(op type, [weight, bias]) of each Conv and Gemm node, in graph order, as fp32 arrays.

    Weight inputs may be computed (a Cast from fp16), so they are read by asking ONNX Runtime for
    them as extra outputs of the unoptimised graph.
    """
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(onnx_path))
    graph = model.graph
    if any(n.op_type == "BatchNormalization" for n in graph.node):
        raise ArtifactError(f"{onnx_path}: BatchNormalization nodes left in the graph (not an eval-mode export)")
    if any(n.op_type == "QuantizeLinear" for n in graph.node):
        # Activations are quantised too: torch would compute something else. Use the fp32 parent.
        raise ArtifactError(f"{onnx_path}: an int8 graph; fine-tune its fp32 parent instead")
    nodes = [n for n in graph.node if n.op_type in ("Conv", "Gemm")]
    for n in nodes:
        if n.op_type == "Gemm" and {a.name: a.i for a in n.attribute}.get("transB") != 1:
            raise ArtifactError(f"{onnx_path}: Gemm {n.name} without transB=1 is not a torch Linear export")
    names = sorted({i for n in nodes for i in n.input[1:] if i})
    known = {o.name for o in graph.output}
    graph.output.extend(onnx.ValueInfoProto(name=x) for x in names if x not in known)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32) for i in sess.get_inputs()}
    values = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed), strict=True))
    return [(n.op_type, [values[i].astype(np.float32) for i in n.input[1:] if i]) for n in nodes]


def _execution_order(net: nn.Module, side: int) -> list[nn.Module]:
    """Conv2d, BatchNorm2d and Linear modules in the order a forward pass runs them."""
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
        for m in net.modules()
        if isinstance(m, nn.Conv2d | nn.BatchNorm2d | nn.Linear)
    ]
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, 1, side, side))
    finally:
        for h in hooks:
            h.remove()
    return order


def network_from_onnx(artifact_dir: Path | str) -> tuple[nn.Module, ArtifactMeta]:
    """The artifact's network as a torch module (eval mode) with the ONNX graph's weights.

    Raises:
        ArtifactError: no model.onnx, a graph that is not fer's export of this architecture
            (different layers or shapes), or torch and ONNX Runtime disagreeing on the result.
    """
    artifact_dir = Path(artifact_dir)
    meta = read_meta(artifact_dir)
    onnx_path = artifact_dir / ONNX_FILE
    if not onnx_path.is_file():
        raise ArtifactError(f"{artifact_dir}: no {ONNX_FILE} to take weights from")
    if meta.policy.members:
        raise ArtifactError(f"{artifact_dir}: an ensemble graph; fine-tune one of its members")
    side = view_size(meta)
    net = build_model(meta.arch, num_classes=len(meta.labels), dropout=meta.dropout)
    order = _execution_order(net, side)
    layers = [m for m in order if isinstance(m, nn.Conv2d | nn.Linear)]
    found = _weights_by_node(onnx_path)
    if len(found) != len(layers):
        raise ArtifactError(
            f"{onnx_path}: {len(found)} Conv/Gemm nodes but {meta.arch} has {len(layers)} conv/linear layers"
        )
    # The BatchNorm run right after a convolution is the one folded into it.
    bn_after = {
        id(order[i]): order[i + 1]
        for i in range(len(order) - 1)
        if isinstance(order[i], nn.Conv2d) and isinstance(order[i + 1], nn.BatchNorm2d)
    }
    with torch.no_grad():
        for layer, (op, arrays) in zip(layers, found, strict=True):
            want = "Conv" if isinstance(layer, nn.Conv2d) else "Gemm"
            weight, bias = arrays[0], arrays[1] if len(arrays) > 1 else None
            if op != want or tuple(weight.shape) != tuple(layer.weight.shape):
                raise ArtifactError(
                    f"{onnx_path}: expected {want} {tuple(layer.weight.shape)}, found {op} {tuple(weight.shape)}"
                )
            layer.weight.copy_(torch.from_numpy(weight))
            bn = bn_after.get(id(layer))
            if bn is not None:
                # Identity: (x - 0) / sqrt((1 - eps) + eps) * 1 + bias.
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
                bn.weight.fill_(1.0)
                bn.bias.copy_(torch.from_numpy(bias) if bias is not None else torch.zeros_like(bn.bias))
            elif bias is not None:
                if layer.bias is None:
                    raise ArtifactError(f"{onnx_path}: a bias for a layer of {meta.arch} that has none")
                layer.bias.copy_(torch.from_numpy(bias))
    _check_agreement(net, onnx_path, side)
    return net.eval(), meta


def _check_agreement(net: nn.Module, onnx_path: Path, side: int) -> None:
    import onnxruntime as ort

    x = np.random.default_rng(0).normal(size=(8, 1, side, side)).astype(np.float32)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        got = net.eval()(torch.from_numpy(x)).numpy()
    err = float(np.abs(got - ref).max() / max(1.0, float(np.abs(ref).max())))
    if err > AGREEMENT_TOL:
        raise ArtifactError(f"{onnx_path}: the rebuilt network differs from the graph (relative error {err:.3g})")
    log.info("rebuilt %s from its ONNX graph (relative error %.2g)", onnx_path.parent, err)


def init_network(cfg, labels: list[str]) -> tuple[nn.Module, ArtifactMeta]:
    """The network a `TrainConfig` with `init` fine-tunes, checked against what `cfg` would train.

    Raises:
        ConfigError: another architecture, crop or label set than the config's.
    """
    from fer.config import ConfigError

    model, parent = network_from_onnx(cfg.init)
    if parent.arch != cfg.model.arch:
        raise ConfigError(f"init {cfg.init} is a {parent.arch}, but the config trains {cfg.model.arch}")
    if parent.policy.crop != cfg.view_crop:
        raise ConfigError(f"init {cfg.init} sees {parent.policy.crop or 48} px; set augment.crop to match")
    if list(parent.labels) != list(labels):
        raise ConfigError(f"init {cfg.init} has labels {parent.labels}, not {list(labels)}")
    return model, parent


def freeze_batchnorm(net: nn.Module) -> list[nn.Module]:
    """Put every BatchNorm in eval mode (fixed statistics); call after each `net.train()`."""
    frozen = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in frozen:
        m.eval()
    return frozen


def artifact_path(ref: str, registry) -> Path:
    """The artifact folder `ref` names: a folder itself, or a registry reference."""
    return Path(ref) if Path(ref).is_dir() else registry.resolve(ref).path


def resolve_init(ref: str, registry) -> Path:
    """The artifact folder to fine-tune for `ref`: a folder, or a registry reference.

    An int8 version is a quantisation of an fp32 parent (`meta.quantization.parent`); the parent
    is the network to train, and the result gets quantised again before it is served.
    """
    path = artifact_path(ref, registry)
    parent = (read_meta(path).quantization or {}).get("parent")
    if not parent:
        return path
    log.info("%s is int8; fine-tuning its fp32 parent %s", ref, parent)
    # The pipeline's quantize step records its fp32 run folder; `fer quantize --model` a reference.
    if Path(parent).is_dir():
        path = Path(parent)
    elif "/" in parent:
        raise ArtifactError(f"{ref}: its fp32 parent {parent} is gone (a run folder, never registered)")
    else:
        path = registry.resolve(parent).path
    if read_meta(path).quantization:
        raise ArtifactError(f"{ref}: its recorded fp32 parent {parent} is an int8 graph too; no network to fine-tune")
    return path


def resolve_starts(ref: str, registry) -> tuple[list[Path], Policy]:
    """The fp32 networks to fine-tune for `ref`, and the test-time policy they serve under.

    One network for a single model; for an ensemble (`policy.members`), each member's, so that
    fine-tuning it means fine-tuning every member and fusing them again under the same policy.
    """
    policy = read_meta(artifact_path(ref, registry)).policy
    refs = policy.members or [ref]
    return [resolve_init(m, registry) for m in refs], policy
