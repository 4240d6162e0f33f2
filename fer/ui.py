"""The Gradio UI: a photo, a video or the webcam; calls the app's own `EmotionService`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from fer.annotate import annotate
from fer.inference import rotate
from fer.video import Tracker, annotate_frame

EXAMPLES_DIR = Path(__file__).parent / "assets" / "examples"


def _choices(analysis) -> list[str]:
    return [f"Face {i}: {f.emotion} ({f.confidence:.0%})" for i, f in enumerate(analysis.faces, start=1)]


def build_ui(get_service: Callable[[], object | None], metrics=None, video_max_seconds: float = 60.0, feedback=None):
    """Build the Blocks. `get_service` returns the app's current service (None until loaded);
    `feedback` is the app's (FeedbackStore, RecentAnswers) when it collects feedback, else None."""
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
        """Outputs: annotated image, probabilities, face dropdown, (photo, faces) state, summary."""
        if img is None:
            return None, None, gr.update(choices=[], value=None), None, "Upload a photo to start."
        a = analyze_and_record(img)
        if a.rotation:  # found only with the photo turned: show it turned, as the boxes are
            img = rotate(img, a.rotation)
        if not a.faces:
            no_face = "**No face found.** Try a clearer, front-facing photo."
            return img, None, gr.update(choices=[], value=None), None, no_face
        choices = _choices(a)
        summary = (
            f"**{len(a.faces)} face{'s' if len(a.faces) > 1 else ''}** found"
            + (" (the image was treated as a face crop)" if a.is_crop else "")
            + (f" (the photo was turned {a.rotation}° to find them)" if a.rotation else "")
        )
        shown = annotate(img, a.faces, selected=0 if len(a.faces) > 1 else None)
        pid = None
        if feedback is not None:  # kept briefly in memory, as for POST /feedback
            p = service().predictor
            pid = feedback[1].put(a.crops, [f.emotion for f in a.faces], f"{p.name}@{p.version}")
        state = (img, a.faces, pid)
        return shown, a.faces[0].probabilities, gr.update(choices=choices, value=choices[0]), state, summary

    def select(choice: str | None, state):
        """Picking a face in the dropdown shows its probabilities and highlights it in the photo."""
        if not choice or not state:
            return gr.update(), None
        img, faces, _ = state
        i = int(choice.split(":")[0].split()[1]) - 1
        return annotate(img, faces, selected=i if len(faces) > 1 else None), faces[i].probabilities

    def send_feedback(choice: str | None, label: str | None, state):
        """Store the user's emotion for the picked face (the crop, the answer and the label only)."""
        from fer.feedback import FeedbackError

        if not state or not choice or not label:
            return "Pick a face and its emotion first."
        pid = state[2]
        answer = feedback[1].get(pid)
        if answer is None:
            return "This answer is too old for feedback: analyse the photo again."
        i = int(choice.split(":")[0].split()[1]) - 1
        try:
            record = feedback[0].add(answer, i, label, pid)
        except FeedbackError as e:
            return f"Not stored: {e}"
        verdict = "confirmed" if record["agreed"] else f"corrected from {record['predicted']}"
        return f"Thank you: face {i + 1} {verdict} to **{label}**."

    def stream(frame: np.ndarray | None, state):
        """One webcam frame; `state` (tracker, frame count) carries the session's face tracks, so
        each face keeps its id and its label is smoothed like a video's."""
        if frame is None:
            return None, None, state
        tracker, n = state or (None, 0)
        a = analyze_and_record(frame)
        labels = service().predictor.labels
        tracker = tracker or Tracker(labels, alpha=0.4, max_missed=3)
        probs = np.array([[f.probabilities[lab] for lab in labels] for f in a.faces], np.float32)
        tracks = tracker.update(
            n, [(f.box.x, f.box.y, f.box.w, f.box.h) for f in a.faces], probs.reshape(-1, len(labels))
        )
        if not a.faces:
            return frame, None, (tracker, n + 1)
        shown = annotate_frame(frame, a.faces, tracks)
        top = dict(zip(labels, (float(v) for v in tracks[0].smoothed), strict=True))
        return shown, top, (tracker, n + 1)

    def analyze_video(path: str | None):
        """Outputs: the annotated video (WebM), a track summary, emotions over time per face."""
        import tempfile

        import pandas as pd

        from fer.video import VideoError, process_video

        if not path:
            return None, "Upload a video to start.", None
        out = Path(tempfile.mkdtemp(prefix="fer-ui-video-")) / "tracked.webm"
        try:
            r = process_video(service(), Path(path), out_video=out, max_seconds=video_max_seconds)
        except VideoError as e:
            raise gr.Error(str(e)) from None
        lines = [
            f"**{len(r.tracks)} face{'s' if len(r.tracks) != 1 else ''}** tracked over {r.duration_s:.1f} s "
            f"({r.frames_analyzed} frames)"
        ]
        lines += [
            f"- #{t['id']}: mostly **{t['dominant_emotion']}** "
            f"({t['emotion_share'][t['dominant_emotion']]:.0%} of its {t['frames_seen']} frames, "
            f"{t['start_s']:.1f}-{t['end_s']:.1f} s)"
            for t in r.tracks
        ]
        # Each face's smoothed probability of each emotion it ever showed, over time.
        shown = {(t["id"], lab) for t in r.tracks for lab, share in t["emotion_share"].items() if share > 0}
        rows = [
            {"time_s": f["time_s"], "probability": f["probabilities"][lab], "series": f"#{f['track']} {lab}"}
            for f in r.frames
            for lab in f["probabilities"]
            if (f["track"], lab) in shown
        ]
        return str(out), "\n".join(lines), pd.DataFrame(rows, columns=["time_s", "probability", "series"])

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
                    # No label badge and only a download button: nothing sits over the faces' labels.
                    annotated = gr.Image(
                        type="numpy",
                        label="Faces",
                        show_label=False,
                        buttons=["download"],
                        interactive=False,
                        elem_id="annotated",
                    )
                    summary = gr.Markdown(elem_id="summary")
                    face = gr.Dropdown(label="Face", choices=[], interactive=True, elem_id="face")
                    bars = gr.Label(label="Probabilities", num_top_classes=7, elem_id="probabilities")
            with gr.Row(visible=feedback is not None):
                # Only where the deployment collects feedback (FER_FEEDBACK_DIR).
                correct = gr.Dropdown(
                    choices=["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"],
                    label="Correct this face's emotion",
                    elem_id="correct",
                )
                send = gr.Button("Send feedback", elem_id="send-feedback")
            feedback_md = gr.Markdown(elem_id="feedback-msg")
            photo_state = gr.State(None)  # (photo, faces, prediction_id) of the last analysis
            outputs = [annotated, bars, face, photo_state, summary]
            examples = sorted(str(p) for p in EXAMPLES_DIR.glob("*.jpg"))
            if examples:
                # A click shows the example and analyses it at once (no extra button press).
                gr.Examples(
                    examples=examples,
                    inputs=image,
                    outputs=outputs,
                    fn=analyze,
                    run_on_click=True,
                    cache_examples=False,
                    elem_id="examples",
                )
            run.click(analyze, inputs=image, outputs=outputs, api_name="predict")
            image.upload(analyze, inputs=image, outputs=outputs, api_name=False)
            face.input(select, inputs=[face, photo_state], outputs=[annotated, bars], api_name=False)
            if feedback is not None:
                send.click(send_feedback, inputs=[face, correct, photo_state], outputs=feedback_md, api_name=False)
        with gr.Tab("Video"):
            gr.Markdown(
                f"Upload a short video (up to {video_max_seconds:g} s): every face is tracked, and its emotion "
                "smoothed over time (the same as `POST /predict/video`)."
            )
            with gr.Row():
                with gr.Column():
                    vid_in = gr.Video(label="Video", sources=["upload"], elem_id="video")
                    run_vid = gr.Button("Track faces", variant="primary", elem_id="run-video")
                with gr.Column():
                    vid_out = gr.Video(label="Tracked faces", interactive=False, elem_id="video-annotated")
                    vid_summary = gr.Markdown(elem_id="video-summary")
            vid_plot = gr.LinePlot(
                x="time_s", y="probability", color="series", label="Emotions over time, per face", elem_id="video-plot"
            )
            run_vid.click(analyze_video, inputs=vid_in, outputs=[vid_out, vid_summary, vid_plot], api_name="video")
        with gr.Tab("Webcam"):
            gr.Markdown(
                "Live predictions from your camera (the browser asks for permission; it works on localhost or https)."
            )
            with gr.Row():
                cam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Camera", elem_id="cam")
                with gr.Column():
                    cam_out = gr.Image(type="numpy", label="Faces", interactive=False, elem_id="cam-annotated")
                    cam_bars = gr.Label(label="Most prominent face", num_top_classes=7, elem_id="cam-probabilities")
            cam_state = gr.State(None)  # this session's face tracker
            cam.stream(
                stream,
                inputs=[cam, cam_state],
                outputs=[cam_out, cam_bars, cam_state],
                stream_every=0.5,
                time_limit=60,
                concurrency_limit=4,
                api_name=False,
            )
        demo.load(model_line, outputs=model_md, api_name=False)
    return demo
