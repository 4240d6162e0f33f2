"""The Gradio UI: upload a photo or stream the webcam; calls the app's own `EmotionService`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

EXAMPLES_DIR = Path(__file__).parent / "assets" / "examples"
COLORS = {
    "angry": (220, 50, 47),
    "disgust": (133, 153, 0),
    "fear": (108, 113, 196),
    "happy": (38, 139, 210),
    "sad": (88, 110, 117),
    "surprise": (203, 75, 22),
    "neutral": (147, 161, 161),
}


def annotate(rgb: np.ndarray, analysis) -> np.ndarray:
    """Draw a box and `emotion confidence` label on every face."""
    from PIL import Image, ImageDraw, ImageFont

    im = Image.fromarray(rgb).convert("RGB")
    draw = ImageDraw.Draw(im)
    side = max(im.size)
    width = max(2, side // 250)
    font = ImageFont.load_default(size=max(12, side // 40))
    for i, f in enumerate(analysis.faces, start=1):
        b, color = f.box, COLORS.get(f.emotion, (255, 0, 0))
        draw.rectangle([b.x, b.y, b.x + b.w, b.y + b.h], outline=color, width=width)
        text = f"{i}: {f.emotion} {f.confidence:.0%}"
        tx, ty = b.x, max(0, b.y - font.size - 2 * width)
        box = draw.textbbox((tx, ty), text, font=font)
        draw.rectangle([box[0] - width, box[1] - width, box[2] + width, box[3] + width], fill=color)
        draw.text((tx, ty), text, fill=(255, 255, 255), font=font)
    return np.asarray(im)


def _choices(analysis) -> list[str]:
    return [f"Face {i}: {f.emotion} ({f.confidence:.0%})" for i, f in enumerate(analysis.faces, start=1)]


def build_ui(get_service: Callable[[], object | None], metrics=None):
    """Build the Blocks. `get_service` returns the app's current service (None until loaded)."""
    import gradio as gr

    def service():
        svc = get_service()
        if svc is None:
            raise gr.Error("The model is not loaded yet; try again in a moment.")
        return svc

    def analyze_and_record(img: np.ndarray):
        a = service().analyze(img)
        if metrics is not None:
            metrics.record_analysis(a, "ui")
        return a

    def analyze(img: np.ndarray | None):
        if img is None:
            return None, None, gr.update(choices=[], value=None), [], "Upload a photo to start."
        a = analyze_and_record(img)
        if not a.faces:
            no_face = "**No face found.** Try a clearer, front-facing photo."
            return img, None, gr.update(choices=[], value=None), [], no_face
        probs = [f.probabilities for f in a.faces]
        choices = _choices(a)
        summary = f"**{len(a.faces)} face{'s' if len(a.faces) > 1 else ''}** found" + (
            " (the image was treated as a face crop)" if a.is_crop else ""
        )
        return annotate(img, a), probs[0], gr.update(choices=choices, value=choices[0]), probs, summary

    def select(choice: str | None, probs: list[dict]):
        if not choice or not probs:
            return None
        return probs[int(choice.split(":")[0].split()[1]) - 1]

    def stream(frame: np.ndarray | None):
        if frame is None:
            return None, None
        a = analyze_and_record(frame)
        return annotate(frame, a), (a.primary.probabilities if a.primary else None)

    def model_line():
        svc = get_service()
        if svc is None:
            return "Model: *not loaded*"
        p = svc.predictor
        acc = p.meta.metrics.get("test_acc")
        extra = f", FER-2013 PrivateTest accuracy {acc:.1%}" if isinstance(acc, float) else ""
        return f"Model: **{p.name}** version **{p.version}** ({p.meta.arch}{extra})"

    # Gradio keeps each uploaded file in its cache folder to hand it to the handler; delete_cache
    # removes files older than 5 minutes every 5 minutes, so photos do not pile up on disk.
    with gr.Blocks(title="fer: facial emotion recognition", analytics_enabled=False, delete_cache=(300, 300)) as demo:
        gr.Markdown(
            "# Facial emotion recognition\nFinds every face and names its emotion: angry, disgust, fear, "
            "happy, sad, surprise or neutral. The same model answers `POST /predict` ([API docs](/docs))."
        )
        model_md = gr.Markdown(elem_id="model-info")
        with gr.Tab("Upload"):
            with gr.Row():
                with gr.Column():
                    image = gr.Image(type="numpy", label="Photo", sources=["upload", "clipboard"], elem_id="photo")
                    run = gr.Button("Detect emotions", variant="primary", elem_id="run")
                with gr.Column():
                    annotated = gr.Image(type="numpy", label="Faces", interactive=False, elem_id="annotated")
                    summary = gr.Markdown(elem_id="summary")
                    face = gr.Dropdown(label="Face", choices=[], interactive=True, elem_id="face")
                    bars = gr.Label(label="Probabilities", num_top_classes=7, elem_id="probabilities")
            probs_state = gr.State([])
            examples = sorted(str(p) for p in EXAMPLES_DIR.glob("*.jpg"))
            if examples:
                gr.Examples(examples=examples, inputs=image)
            outputs = [annotated, bars, face, probs_state, summary]
            run.click(analyze, inputs=image, outputs=outputs, api_name="predict")
            image.upload(analyze, inputs=image, outputs=outputs, api_name=False)
            face.change(select, inputs=[face, probs_state], outputs=bars, api_name=False)
        with gr.Tab("Webcam"):
            gr.Markdown(
                "Live predictions from your camera (the browser asks for permission; it works on localhost or https)."
            )
            with gr.Row():
                cam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Camera", elem_id="cam")
                with gr.Column():
                    cam_out = gr.Image(type="numpy", label="Faces", interactive=False, elem_id="cam-annotated")
                    cam_bars = gr.Label(label="Most prominent face", num_top_classes=7, elem_id="cam-probabilities")
            cam.stream(
                stream,
                inputs=cam,
                outputs=[cam_out, cam_bars],
                stream_every=0.5,
                time_limit=60,
                concurrency_limit=4,
                api_name=False,
            )
        demo.load(model_line, outputs=model_md, api_name=False)
    return demo
