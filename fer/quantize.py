"""Post-training int8 quantisation of an artifact's ONNX model (static, QDQ, per-channel weights).

Measured on the production model (docs/benchmarks.md, `benchmarks/onnx_variants.py`): per-face
latency 3.4 ms -> 0.7 ms at batch 1 on one thread, file 45 MB (fp32) -> 11 MB, PrivateTest
accuracy unchanged within 0.1 point. Dynamic quantisation is *slower* than fp32 for this
convolutional network (ConvInteger kernels), so only static quantisation is offered.

Needs `onnx` and `onnxruntime.quantization` (the training requirements), not the serving image.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from fer.artifact import CARD_FILE, META_FILE, ONNX_FILE, WEIGHTS_FILE, read_meta, write_meta


def plain_fp32(src: Path, dst: Path) -> Path:
    """Undo `compact_onnx` storage: fp32 initializers and no Cast nodes, as the quantiser expects."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    casts = {n.output[0]: n for n in g.node if n.op_type == "Cast" and n.input[0].endswith("__fp16")}
    inits = {i.name: i for i in g.initializer}
    for out, node in casts.items():
        half = inits.pop(node.input[0])
        inits[out] = numpy_helper.from_array(numpy_helper.to_array(half).astype(np.float32), name=out)
    del g.initializer[:]
    g.initializer.extend(inits.values())
    keep = [n for n in g.node if n.output[0] not in casts]
    del g.node[:]
    g.node.extend(keep)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


def quantize_onnx(src: Path, dst: Path, calibration: np.ndarray, batch_size: int = 50) -> Path:
    """Static int8 quantisation of `src` (QDQ format, per-channel int8 weights, uint8 activations).

    Args:
        calibration: preprocessed model inputs (N, 1, H, W) float32 whose activation ranges the
            quantiser records; a thousand training images are plenty.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = plain_fp32(src, Path(tmp) / "fp32.onnx")
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre))  # shape inference + fusions the quantiser relies on
        name = onnx.load(str(pre)).graph.input[0].name

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.batches = iter(
                    [{name: calibration[i : i + batch_size]} for i in range(0, len(calibration), batch_size)]
                )

            def get_next(self):
                return next(self.batches, None)

        quantize_static(
            str(pre),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            # 7-bit weights: ONNX Runtime's u8s8 int8 kernels on AVX2 and non-VNNI AVX-512 CPUs can
            # saturate the 16-bit intermediate sums with full-range weights. Full range cost the
            # shipped int8 model 1.4 points of PublicTest accuracy on an AVX2-only EPYC (and none on
            # a VNNI CPU), so an answer depended on the server's CPU. reduce_range is what the ORT
            # docs prescribe for those machines; on VNNI machines it costs nothing measurable.
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    return dst


def quantize_artifact(src_dir: Path, dst_dir: Path, calibration_images: np.ndarray, parent: str, seed: int = 0) -> Path:
    """A new artifact folder: `src_dir`'s model quantised to int8, its meta saying so.

    Metrics are the parent's until re-evaluated (`fer quantize` does that before registering).
    """
    from fer.inference import Predictor
    from fer.policy import views

    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    dst_dir.mkdir(parents=True, exist_ok=True)
    predictor = Predictor(src_dir)
    # Calibrate on what the network sees under the artifact's policy (crop windows, mirrors).
    seen = views(calibration_images, predictor.policy)
    quantize_onnx(src_dir / ONNX_FILE, dst_dir / ONNX_FILE, predictor.preprocess(seen.reshape(-1, *seen.shape[2:])))
    meta = read_meta(src_dir)
    meta.quantization = {
        "method": "onnxruntime static QDQ",
        "weights": "int8 per-channel, 7-bit range (reduce_range)",
        "activations": "uint8",
        "calibration_images": len(calibration_images),
        "calibration_seed": seed,
        "parent": parent,
    }
    write_meta(dst_dir, meta)
    # Anything else the artifact carries, except registry bookkeeping and the parent's torch
    # weights: those describe the fp32 network, not this model.onnx (`fer export` would rebuild an
    # fp32 model from them under an int8 meta), and they would add ~45 MB to every registered
    # int8 version. Fine-tuning an int8 version goes back to its fp32 parent (`resolve_init`).
    for extra in src_dir.iterdir():
        if extra.name not in {ONNX_FILE, META_FILE, CARD_FILE, WEIGHTS_FILE} and extra.is_file():
            shutil.copy2(extra, dst_dir / extra.name)
    return dst_dir


def quantize_and_measure(
    src_dir: Path, dst_dir: Path, ds, parent: str, calibration: int = 1000, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Quantise with `calibration` random Training images, then re-measure val and test.

    Returns {metric: (parent value, int8 value)} for val_acc and test_acc where both exist.
    """
    from fer.evaluate import measure_artifact

    train = ds["train"]
    pick = np.random.default_rng(seed).choice(len(train), min(calibration, len(train)), replace=False)
    quantize_artifact(src_dir, dst_dir, train.x[pick], parent=parent, seed=seed)
    meta = measure_artifact(dst_dir, ds, f"parent_{parent}")
    before = meta.metrics_measured[f"parent_{parent}"]
    return {k: (before[k], meta.metrics[k]) for k in ("val_acc", "test_acc") if k in meta.metrics and k in before}
