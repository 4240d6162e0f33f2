"""Prometheus collectors: the metric names that `monitoring/` (alerts, dashboards) refers to.

With several worker processes (`FER_WORKERS` > 1) each worker counts on its own, so `serve()` sets
`PROMETHEUS_MULTIPROC_DIR` before the workers start: prometheus_client then keeps every value in
a per-process file there, and `/metrics`, whichever worker answers it, adds them all up.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
MODEL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
CONFIDENCE_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
FACES_BUCKETS = (0, 1, 2, 3, 5, 10, 20, 50)


class Metrics:
    """All of the app's collectors, registered in one (per-app) registry."""

    def __init__(self, multiproc_dir: str | None = None, registry: CollectorRegistry | None = None):
        """`multiproc_dir`: the `PROMETHEUS_MULTIPROC_DIR` of a multi-worker server (None: one process).

        prometheus_client reads that variable itself when it is imported, so the server sets it
        in the environment before the workers start; it is passed here to merge their files.
        """
        disable_created_metrics()  # `_created` series double the scrape size and no rule uses them
        self.multiprocess = bool(multiproc_dir)
        self.multiproc_dir = multiproc_dir
        if multiproc_dir:  # prometheus_client fails on a missing directory; make it instead
            os.makedirs(multiproc_dir, exist_ok=True)
        self.registry = registry or CollectorRegistry()
        self._model_labels: tuple[str, str] | None = None
        r = self.registry
        self.requests = Counter(
            "fer_http_requests", "HTTP requests by route, method and status", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "fer_http_request_duration_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "fer_inference_duration_seconds",
            "Emotion model time per image (all faces)",
            buckets=MODEL_BUCKETS,
            registry=r,
        )
        self.detection = Histogram(
            "fer_detection_duration_seconds", "Face detection time per image", buckets=MODEL_BUCKETS, registry=r
        )
        self.faces = Histogram(
            "fer_faces_per_image", "Faces found per analysed image", buckets=FACES_BUCKETS, registry=r
        )
        self.predictions = Counter("fer_predictions", "Predicted emotions, one per face", ["emotion"], registry=r)
        self.confidence = Histogram(
            "fer_prediction_confidence", "Top-class probability per face", buckets=CONFIDENCE_BUCKETS, registry=r
        )
        self.no_face = Counter("fer_no_face", "Images in which no face was found", registry=r)
        self.images = Counter("fer_images_analyzed", "Images analysed, by source (api or ui)", ["source"], registry=r)
        # Across workers: a version is served if any live worker serves it; the app is ready only if
        # every live worker is (one worker without a model fails a third of requests).
        self.model_info = Gauge(
            "fer_model_info",
            "The model being served (value 1)",
            ["name", "version"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.model_ready = Gauge(
            "fer_model_ready", "1 when a model is loaded and serving", registry=r, multiprocess_mode="livemin"
        )
        # Shadow rollout: a candidate's answers on the same faces, compared after each response.
        self.shadow_predictions = Counter(
            "fer_shadow_predictions",
            "Faces the shadow model answered, by agreement with production",
            ["agreed"],
            registry=r,
        )
        for agreed in ("true", "false"):  # both series exist from the start: a ratio needs them
            self.shadow_predictions.labels(agreed=agreed)
        self.shadow_confidence = Histogram(
            "fer_shadow_confidence",
            "The shadow model's top-class probability per face",
            buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.shadow_inference = Histogram(
            "fer_shadow_inference_duration_seconds",
            "Shadow model time per image (after the response)",
            buckets=MODEL_BUCKETS,
            registry=r,
        )
        self.shadow_skipped = Counter(
            "fer_shadow_skipped",
            "Images the shadow model skipped because the server had no core to spare",
            registry=r,
        )
        self.shadow_info = Gauge(
            "fer_shadow_info",
            "The shadow model (value 1)",
            ["name", "version"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.feedback = Counter(
            "fer_feedback", "User feedback received, by whether it agreed with the model", ["agreed"], registry=r
        )
        self.model_load_failures = Counter(
            "fer_model_load_failures", "Models that failed to load or were refused", registry=r
        )

    def set_model(self, name: str, version: str) -> None:
        old, self._model_labels = self._model_labels, (name, version)
        if old and old != self._model_labels:
            if self.multiprocess:
                self.model_info.labels(*old).set(0)  # a per-process file cannot forget a series
            else:
                self.model_info.remove(*old)
        self.model_info.labels(name=name, version=version).set(1)
        self.model_ready.set(1)

    def exposition(self) -> bytes:
        """The text format for `/metrics`: this process's metrics, or every worker's added up."""
        if self.multiprocess:
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged, path=self.multiproc_dir)
            return generate_latest(merged)
        return generate_latest(self.registry)

    def close(self) -> None:
        """At worker exit: drop this process's live gauges (counters and histograms stay summed)."""
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())

    def record_shadow(self, shadow: list[str], production: list[str], confidences, seconds: float) -> None:
        self.shadow_inference.observe(seconds)
        for s, p, c in zip(shadow, production, confidences, strict=True):
            self.shadow_predictions.labels(agreed=str(s == p).lower()).inc()
            self.shadow_confidence.observe(float(c))

    def record_analysis(self, analysis, source: str) -> None:
        self.images.labels(source=source).inc()
        self.detection.observe(analysis.detect_s)
        self.faces.observe(len(analysis.faces))
        if not analysis.faces:
            self.no_face.inc()
            return
        self.inference.observe(analysis.infer_s)
        for f in analysis.faces:
            self.predictions.labels(emotion=f.emotion).inc()
            self.confidence.observe(f.confidence)
