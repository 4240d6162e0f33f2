"""Per-face model cost of the production model under ONNX Runtime settings, with accuracy, in one run.

Variants: fp32 (as shipped: fp16-stored weights cast back to fp32 at load) at graph optimisation
BASIC vs ALL, 1 vs 2 intra-op threads; int8 static quantisation (QDQ, per-channel weights,
calibrated on 1,000 Training images) and int8 dynamic quantisation. For each: PrivateTest accuracy
(3,589 faces, single crop) and latency per face at batch 1 and batch 16.

    python benchmarks/onnx_variants.py --data ../shared/data/fer2013/fer2013_reconstructed.csv.gz \
        [--model fer-resnet18@1] [--out DIR]

The static int8 variant is made by `fer.quantize` exactly as `fer quantize` makes the shipped one.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from _common import ms, timeit


def quantize_dynamic_int8(fp32: Path, dst: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(dst), weight_type=QuantType.QInt8)
    return dst


def session(path: Path, threads: int, level: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, f"ORT_ENABLE_{level}")
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default="fer-resnet18@1", help="the fp32 model to start from")
    ap.add_argument("--out", default=None, help="keep the variant models here (default: a temp dir)")
    args = ap.parse_args()

    from fer.data import load_dataset
    from fer.inference import Predictor
    from fer.quantize import plain_fp32, quantize_onnx
    from fer.registry import open_registry

    mv = open_registry(os.environ.get("FER_REGISTRY_DIR", ".fer/registry")).resolve(args.model)
    pred = Predictor(mv.path)
    data = load_dataset(args.data)
    test, train = data["test"], data["train"]  # PrivateTest; Training (less its validation part)
    calib = train.x[np.random.default_rng(0).choice(len(train), 1000, replace=False)]
    out = Path(args.out or tempfile.mkdtemp(prefix="fer-onnx-"))
    out.mkdir(parents=True, exist_ok=True)
    fp32 = plain_fp32(mv.path / "model.onnx", out / "fp32.onnx")
    models = {
        "fp32": fp32,
        "int8-static": quantize_onnx(mv.path / "model.onnx", out / "int8_static.onnx", pred.preprocess(calib)),
        "int8-dynamic": quantize_dynamic_int8(fp32, out / "int8_dynamic.onnx"),
    }
    x = pred.preprocess(test.x)
    one, sixteen = x[:1], x[:16]
    print(f"{mv.ref} ({pred.meta.arch}), PrivateTest {len(test)} faces, {os.cpu_count()} CPUs")
    print(f"{'variant':<34} {'MB':>5} {'acc':>7} {'b1 p50 ms':>10} {'b16 ms/face':>12}")
    base_acc = None
    for kind, path in models.items():
        for level, threads in (("BASIC", 1), ("ALL", 1), ("ALL", 2)):
            if kind != "fp32" and (level, threads) != ("ALL", 1):
                continue
            s = session(path, threads, level)
            inp = s.get_inputs()[0].name
            logits = np.concatenate([s.run(None, {inp: x[i : i + 256]})[0] for i in range(0, len(x), 256)])
            acc = float((logits.argmax(1) == test.y).mean())
            base_acc = base_acc if base_acc is not None else acc
            b1 = timeit(lambda s=s, inp=inp: s.run(None, {inp: one}), 400)
            b16 = timeit(lambda s=s, inp=inp: s.run(None, {inp: sixteen}), 60, warmup=5)
            label = f"{kind}, opt {level}, {threads} thread(s)"
            print(
                f"{label:<34} {path.stat().st_size / 1e6:>5.1f} {acc:>7.2%} {ms(b1, 50):>10.2f} "
                f"{ms(b16, 50) / 16:>12.2f}   ({(acc - base_acc) * 100:+.2f} pt)",
                flush=True,
            )


if __name__ == "__main__":
    main()
