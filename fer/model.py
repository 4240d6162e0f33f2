"""ResNet-18 variants for 48x48 grayscale faces; saving, loading and exporting their artifacts.

The artifact's layout and `meta.json` schema belong to `fer.artifact` (torch-free, so serving
reads it too); this module adds what needs torch: the weights and the ONNX export.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from fer.artifact import ONNX_FILE, WEIGHTS_FILE, ArtifactMeta, read_meta, write_meta
from fer.config import REPO_ROOT

log = logging.getLogger(__name__)


class PretrainedUnavailable(RuntimeError):
    """ImageNet weights were asked for but could not be downloaded."""


def _resnet18(stem: str, pretrained: bool, num_classes: int, dropout: float) -> nn.Module:
    from torchvision.models import ResNet18_Weights, resnet18

    weights = None
    if pretrained:
        weights = ResNet18_Weights.IMAGENET1K_V1
        try:
            net = resnet18(weights=weights)
        except Exception as e:  # any download failure gets the same clear message
            raise PretrainedUnavailable(
                "pretrained=true needs torchvision's ImageNet ResNet-18 weights, which could not be "
                f"downloaded ({type(e).__name__}: {e}). Train from scratch (model.pretrained=false) "
                "or put the weights in torch's cache ($TORCH_HOME/hub/checkpoints) first."
            ) from e
    else:
        net = resnet18(weights=None)
    old = net.conv1
    if stem == "imagenet":
        # conv7x7/2 + maxpool: 48 -> 12 at layer1. Cheapest; what the CPU production model uses.
        conv = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    elif stem == "s2":
        # conv3x3/2, no maxpool: 48 -> 24 at layer1. ~4x the cost of the ImageNet stem.
        conv = nn.Conv2d(1, 64, kernel_size=3, stride=2, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif stem == "cifar":
        # conv3x3/1, no maxpool: 48 -> 48 at layer1, the published 72-74% setting; GPU territory.
        conv = nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    else:  # pragma: no cover - guarded by ARCHITECTURES
        raise ValueError(stem)
    if pretrained and stem == "imagenet":
        # Grayscale input: sum the RGB filters, which is what the pretrained net sees for R=G=B.
        with torch.no_grad():
            conv.weight.copy_(old.weight.sum(dim=1, keepdim=True))
    net.conv1 = conv
    head = nn.Linear(net.fc.in_features, num_classes)
    net.fc = nn.Sequential(nn.Dropout(dropout), head) if dropout > 0 else head
    return net


def _tiny(pretrained: bool, num_classes: int, dropout: float) -> nn.Module:
    """Two strided convolutions and a linear head on a 4x4 grid (~9k parameters): for tests and smoke runs.

    Training, tuning and pipeline tests exercise the loop, not the network; this one trains on
    CPU in milliseconds per batch, so those tests take seconds. Never a production choice.
    """
    if pretrained:
        raise PretrainedUnavailable("the tiny test network has no pretrained weights")
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(inplace=True),
        nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(inplace=True),
        # A 4x4 grid, not a global pool: where a feature is matters (the synthetic test classes
        # differ only by position).
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(32 * 16, num_classes),
    )


# Name -> constructor(pretrained, num_classes, dropout). Measured costs live in docs/training.md.
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": lambda **kw: _resnet18("imagenet", **kw),
    "resnet18_s2": lambda **kw: _resnet18("s2", **kw),
    "resnet18_cifar": lambda **kw: _resnet18("cifar", **kw),
    "tiny": _tiny,
}


def build_model(arch: str, num_classes: int = 7, pretrained: bool = False, dropout: float = 0.0) -> nn.Module:
    """Build a named architecture for 1x48x48 input.

    Raises:
        ValueError: unknown architecture name.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch](pretrained=pretrained, num_classes=num_classes, dropout=dropout)


def code_version() -> str:
    """Git commit of the code, `<commit>-dirty-<diff hash>` when modified, or 'unknown' outside a checkout.

    The diff's hash tells two runs from one modified tree apart from two from another; `fit`
    saves the diff itself as `code.diff` in the run folder, so a dirty run stays reproducible.
    """
    return code_state()[0]


def code_state() -> tuple[str, str]:
    """(code version, `git diff HEAD` of tracked files; "" when clean or outside a checkout)."""
    import hashlib

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout

    try:
        rev = git("rev-parse", "--short", "HEAD").strip()
        diff = git("diff", "HEAD", "--no-color", "--no-ext-diff")
    except (OSError, subprocess.SubprocessError):
        return "unknown", ""
    if not diff:
        return rev, ""
    return f"{rev}-dirty-{hashlib.sha256(diff.encode()).hexdigest()[:8]}", diff


def clean_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip wrappers' key prefixes (torch.compile's `_orig_mod.`, DataParallel's `module.`)."""
    out = {}
    for k, v in state.items():
        for prefix in ("_orig_mod.", "module."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v
    return out


def save_artifact(model: nn.Module, meta: ArtifactMeta, out_dir: Path, onnx: bool = True) -> Path:
    """Write weights, meta.json and (by default) the ONNX export into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(clean_state_dict(model.state_dict()), out_dir / WEIGHTS_FILE)
    write_meta(out_dir, meta)
    if onnx:
        export_onnx(model, out_dir / ONNX_FILE, view_size(meta))
    return out_dir


def view_size(meta: ArtifactMeta) -> int:
    """The side of what the network sees: the policy's crop windows, else the whole face crop."""
    return meta.policy.crop or meta.input_size


def load_model(artifact_dir: Path, map_location: str = "cpu") -> tuple[nn.Module, ArtifactMeta]:
    """Rebuild the torch model of an artifact from its meta and weights.

    Raises:
        ArtifactError: meta.json is missing or invalid.
    """
    meta = read_meta(artifact_dir)
    model = build_model(meta.arch, num_classes=len(meta.labels), dropout=meta.dropout)
    state = torch.load(Path(artifact_dir) / WEIGHTS_FILE, map_location=map_location, weights_only=True)
    model.load_state_dict(clean_state_dict(state))
    return model.eval(), meta


def export_onnx(model: nn.Module, path: Path, input_size: int = 48) -> Path:
    """Export an fp32 ONNX graph with a dynamic batch axis: input `image` (N,1,H,W), output `logits`."""
    model = model.eval().to("cpu", memory_format=torch.contiguous_format).float()
    dummy = torch.zeros(1, 1, input_size, input_size)
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    return path


def export_serving_artifact(artifact: Path, out: Path, fp16: bool = True) -> ArtifactMeta:
    """A slim serving folder (model.onnx + meta.json) from a training artifact's weights.

    `fp16` stores the weights as fp16 (half the file, fp32 compute; see `compact_onnx`).
    """
    out.mkdir(parents=True, exist_ok=True)
    model, meta = load_model(artifact)
    tmp = out / "model.fp32.onnx"
    export_onnx(model, tmp, view_size(meta))
    if fp16:
        compact_onnx(tmp, out / ONNX_FILE)
        tmp.unlink()
    else:
        tmp.replace(out / ONNX_FILE)
    write_meta(out, meta)
    return meta


def compact_onnx(src: Path, dst: Path) -> Path:
    """Store an ONNX model's large float weights as fp16, each followed by a Cast back to fp32.

    Halves the file (what the repository ships) while the graph still computes in fp32: ONNX
    Runtime folds the Casts into fp32 constants when the session is created, so inference speed is
    unchanged; the rounding moves logits by ~1e-3 (accuracy checked by the data-gated tests).
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    keep, casts = [], []
    for init in graph.initializer:
        arr = numpy_helper.to_array(init)
        if init.data_type == TensorProto.FLOAT and arr.size >= 1024:
            half = numpy_helper.from_array(arr.astype(np.float16), name=f"{init.name}__fp16")
            keep.append(half)
            casts.append(
                helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT, name=f"{init.name}__cast")
            )
        else:
            keep.append(init)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)  # Casts first keeps the graph topologically sorted
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst
