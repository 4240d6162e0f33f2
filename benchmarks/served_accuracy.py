"""Accuracy as served: every PrivateTest crop through `POST /predict` of the real app, default settings.

Issue #14's bar is measured this way, not in process: the app (`python app.py`, the shipped
registry, the model its `production` alias names, every default setting) answers each 48x48
PrivateTest face sent as a PNG upload, and the answers are scored against the labels. The same
faces then go through `fer evaluate`'s path in process (`evaluate_split` on the same registry
version), and the script reports how far the two disagree (they must not).

    python benchmarks/served_accuracy.py --data ../shared/data/fer2013/fer2013_reconstructed.csv.gz \
        [--model fer-resnet18@production] [--registry DIR] [--split test] [--out report.json]

Prints accuracy, macro-F1 and ECE as served, the same without the PrivateTest images that
appear pixel-for-pixel in Training, FER+ majority accuracy when `fer2013new.csv` lies beside the
data, and the largest probability difference to the in-process evaluation.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from _common import REPO, running_app


def png(face: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(face).save(buf, format="PNG")
    return buf.getvalue()


def served_probabilities(port: int, faces: np.ndarray, labels: list[str], concurrency: int) -> np.ndarray:
    import httpx

    def one(face: np.ndarray) -> list[float]:
        r = client.post("/predict", files={"file": ("face.png", png(face), "image/png")})
        r.raise_for_status()
        body = r.json()
        # A FER-2013 row is a face crop: the app must classify it whole, as one face.
        if not (body["whole_image"] and body["face_count"] == 1):
            raise SystemExit(f"a 48x48 crop was not answered as one whole-image face: {body}")
        return [body["faces"][0]["probabilities"][lab] for lab in labels]

    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, timeout=60) as client, ThreadPoolExecutor(concurrency) as pool:
        return np.array(list(pool.map(one, faces)), dtype=np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="fer2013.csv[.gz]")
    ap.add_argument("--model", default="fer-resnet18@production", help="registry reference the app serves")
    ap.add_argument("--split", default="test", help="test (PrivateTest) or val (PublicTest)")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--port", type=int, default=8093)
    ap.add_argument("--registry", type=Path, help="the app's registry folder (FER_REGISTRY_DIR)")
    ap.add_argument("--out", type=Path, help="write the metrics as JSON here")
    args = ap.parse_args()

    from fer.data import load_dataset
    from fer.evaluate import classification_metrics, evaluate_split, ferplus_majority
    from fer.explore import in_split
    from fer.inference import Predictor
    from fer.registry import open_registry

    ds = load_dataset(args.data)
    split = ds[args.split]
    registry = (args.registry or REPO / ".fer" / "registry").resolve()
    mv = open_registry(registry).resolve(args.model)  # the registry the app opens
    predictor = Predictor(mv.path, threads=0)
    labels = list(predictor.labels)

    t = time.perf_counter()
    with running_app(args.port, FER_MODEL=args.model, FER_REGISTRY_DIR=str(registry)):
        served = served_probabilities(args.port, split.x, labels, args.concurrency)
    wall = time.perf_counter() - t

    m = classification_metrics(split.y, served, labels)
    unseen = ~in_split(ds, "train", args.split)
    mu = classification_metrics(split.y[unseen], served[unseen], labels)
    local = predictor.predict_proba(split.x)
    report = {
        "model": mv.ref,
        "split": args.split,
        "policy": predictor.policy.model_dump(mode="json"),
        "n": m["n"],
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "ece": m["ece"],
        "unseen": {"n": mu["n"], "accuracy": mu["accuracy"], "macro_f1": mu["macro_f1"], "ece": mu["ece"]},
        "max_abs_diff_vs_evaluate": float(np.abs(served - local).max()),
        "argmax_disagreements_vs_evaluate": int((served.argmax(1) != local.argmax(1)).sum()),
        "evaluate_accuracy": evaluate_split(predictor, split)["accuracy"],
        "wall_s": wall,
    }
    ferplus = Path(args.data).parent / "fer2013new.csv"
    if ferplus.is_file():
        fp_label, valid = ferplus_majority(ferplus, split.rows)
        report["ferplus_accuracy"] = float((served.argmax(1)[valid] == fp_label[valid]).mean())
    print(
        f"{mv.ref} as served on {args.split} ({m['n']} crops through POST /predict, {wall:.0f} s): "
        f"accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  ECE {m['ece']:.4f}"
    )
    print(f"  without the {int((~unseen).sum())} Training duplicates ({mu['n']}): accuracy {mu['accuracy']:.4f}")
    if "ferplus_accuracy" in report:
        print(f"  FER+ majority accuracy {report['ferplus_accuracy']:.4f}")
    print(
        f"  vs fer evaluate in process: accuracy {report['evaluate_accuracy']:.4f}, largest probability "
        f"difference {report['max_abs_diff_vs_evaluate']:.2e}, "
        f"{report['argmax_disagreements_vs_evaluate']} different answers"
    )
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
