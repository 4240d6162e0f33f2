"""Where a photo's time goes, against the floor set by the two models (one thread).

For a one-face 640x480 JPEG and a 12 MP phone-sized JPEG: the models alone (YuNet on the
detection-size image + the emotion classifier on the crop), then the whole path as served
(decode, EXIF, reduced-scale decode of large JPEGs, colour conversion, resize, alignment,
classification), and the full-resolution decode it replaced. Then a 640x480 one-face video
through `fer video`'s path with --every 1.

    OMP_NUM_THREADS=1 python benchmarks/photo_path.py
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))


def median_ms(fn, n: int) -> float:
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def jpeg(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def measure(svc, name: str, data: bytes, n: int) -> None:
    import cv2

    from fer.images import decode_image, decode_photo

    photo = decode_photo(data)
    rgb = photo.rgb
    bgr, _ = svc.detector.detection_input(rgb, photo.pixel_scale)
    crops = np.stack([f.crop for f in svc.detector.detect(rgb, photo.pixel_scale)])
    detect = median_ms(lambda: svc.detector.yunet.detect(bgr), n)
    models = detect + median_ms(lambda: svc.predictor.predict_proba(crops), n)
    print(f"{name}: YuNet on {bgr.shape[1]}x{bgr.shape[0]} {detect:.1f} ms (ONNX Runtime)", end="; ")
    opencv = cv2.FaceDetectorYN.create(svc.detector.model_path, "", (bgr.shape[1], bgr.shape[0]), 0.7, 0.3, 5000)
    print(f"the same in OpenCV's FaceDetectorYN {median_ms(lambda: opencv.detect(bgr), n):.1f} ms")

    def served():
        photo = decode_photo(data)
        return svc.analyze(photo.rgb, pixel_scale=photo.pixel_scale).scaled(photo)

    whole = median_ms(served, n)
    full = median_ms(lambda: svc.analyze(decode_image(data)), n)
    reduced_ms, full_ms = median_ms(lambda: decode_photo(data), n), median_ms(lambda: decode_image(data), n)
    print(f"{name}: models {models:.1f} ms; whole photo as served {whole:.1f} ms ({whole / models:.2f}x the models)")
    print(
        f"  with a full-resolution decode instead: {full:.1f} ms ({full / models:.2f}x); "
        f"decode alone {reduced_ms:.1f} ms reduced vs {full_ms:.1f} ms full"
    )


def main() -> None:

    from fer.config import Settings
    from fer.serving.holder import load_service
    from fer.video import process_video

    svc = load_service(Settings(registry_dir=tempfile.mkdtemp(), model_threads=1))
    face = Image.open(REPO / "fer/assets/examples/astronaut.jpg").convert("RGB").resize((360, 360))
    canvas = Image.new("RGB", (640, 480), (90, 90, 90))
    canvas.paste(face, (140, 60))
    print(f"one thread (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), {os.cpu_count()} CPUs")
    for name, im, n in (("640x480", canvas, 50), ("12 MP (4000x3000)", canvas.resize((4000, 3000)), 10)):
        measure(svc, name, jpeg(im), n)
    import videos

    with tempfile.TemporaryDirectory() as tmp:
        path = videos.pan(Path(tmp) / "pan.mp4", n=150)
        t = time.perf_counter()
        r = process_video(svc, path, every=1)
        took = time.perf_counter() - t
    print(f"video 640x480, one face, every frame: {r.frames_analyzed / took:.0f} frames/s ({r.frames_analyzed} frames)")


if __name__ == "__main__":
    main()
