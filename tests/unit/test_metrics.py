"""The Prometheus collectors directly: names the monitoring configs rely on, model swaps."""

from __future__ import annotations

from fer.inference import Analysis, Box, FaceResult
from fer.metrics import Metrics


def face(emotion: str, confidence: float) -> FaceResult:
    return FaceResult(
        box=Box(x=0, y=0, w=10, h=10),
        emotion=emotion,
        confidence=confidence,
        probabilities={emotion: confidence},
        detection_score=0.9,
    )


def sample(m: Metrics, metric: str, **labels) -> float | None:
    return m.registry.get_sample_value(metric, labels or None)


def test_analysis_is_recorded():
    m = Metrics()
    m.record_analysis(Analysis([face("happy", 0.9), face("sad", 0.4)], False, 100, 100, 0.01, 0.002), "api")
    m.record_analysis(Analysis([], False, 100, 100, 0.01, 0.0), "ui")
    assert sample(m, "fer_images_analyzed_total", source="api") == 1
    assert sample(m, "fer_images_analyzed_total", source="ui") == 1
    assert sample(m, "fer_predictions_total", emotion="happy") == 1
    assert sample(m, "fer_no_face_total") == 1
    assert sample(m, "fer_prediction_confidence_count") == 2
    assert sample(m, "fer_inference_duration_seconds_count") == 1  # only images with faces


def test_model_swap_moves_the_info_series():
    m = Metrics()
    m.set_model("fer", "1")
    m.set_model("fer", "2")
    assert sample(m, "fer_model_info", name="fer", version="2") == 1
    assert sample(m, "fer_model_info", name="fer", version="1") is None
    assert sample(m, "fer_model_ready") == 1
    text = m.exposition().decode()
    assert 'fer_model_info{name="fer",version="2"} 1.0' in text and 'version="1"' not in text
    assert "fer_http_requests_total{" not in text  # labelled series appear only once counted
