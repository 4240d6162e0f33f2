"""Writes dashboards/fer.json, the Grafana dashboard Grafana provisions on start.

The JSON is generated so the panels stay short to read and review here; edit this file and run
`python monitoring/grafana/build_dashboard.py`. A test checks the committed JSON is up to date and
runs every panel's query against a real Prometheus fed by the real app.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards" / "fer.json"
DS = {"type": "prometheus", "uid": "prometheus"}  # the uid the datasource provisioning file sets
RATE = "$__rate_interval"
PREDICT = 'route="/predict"'

# Five-minute rates of the alert rules' ratios, spelled as the panels need them: `or vector(0)` so a
# ratio reads 0 (not "no data") while nothing has failed yet.
ERROR_5XX = (
    f'(sum(rate(fer_http_requests_total{{status=~"5.."}}[{RATE}])) or vector(0))'
    f" / sum(rate(fer_http_requests_total[{RATE}]))"
)
ERROR_4XX = (
    f'(sum(rate(fer_http_requests_total{{status=~"4.."}}[{RATE}])) or vector(0))'
    f" / sum(rate(fer_http_requests_total[{RATE}]))"
)
NO_FACE = f"sum(rate(fer_no_face_total[{RATE}])) / sum(rate(fer_images_analyzed_total[{RATE}]))"
DRIFT = (
    "0.5 * sum(abs((fer:prediction_share:ratio_1h or on(emotion) (0 * fer:class_prior:ratio))"
    " - on(emotion) fer:class_prior:ratio))"
)


def quantile(q: float, metric: str, selector: str = "") -> str:
    return f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{{{selector}}}[{RATE}])))"


def target(expr: str, legend: str = "", ref: str = "A", **extra) -> dict:
    return {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto", "refId": ref, **extra}


def panel(
    kind: str,
    title: str,
    description: str,
    targets: list[dict],
    grid: tuple[int, int, int, int],
    unit: str = "short",
    **options,
) -> dict:
    x, y, w, h = grid
    p = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [t | {"refId": chr(ord("A") + i)} for i, t in enumerate(targets)],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": options,
    }
    return p


def stat(title, description, expr, grid, unit="short", mappings=None, thresholds=None, legend="", text="value"):
    p = panel(
        "stat",
        title,
        description,
        [target(expr, legend, instant=True)],
        grid,
        unit,
        reduceOptions={"calcs": ["lastNotNull"], "fields": "", "values": False},
        colorMode="background" if thresholds else "none",
        textMode=text,
        graphMode="none",
    )
    if mappings:
        p["fieldConfig"]["defaults"]["mappings"] = mappings
    if thresholds:
        p["fieldConfig"]["defaults"]["thresholds"] = {"mode": "absolute", "steps": thresholds}
    return p


def series(title, description, targets, grid, unit="short", stack=False):
    p = panel(
        "timeseries",
        title,
        description,
        targets,
        grid,
        unit,
        legend={"displayMode": "table", "placement": "bottom", "calcs": ["mean", "lastNotNull"]},
        tooltip={"mode": "multi", "sort": "desc"},
    )
    custom = {"lineWidth": 1, "fillOpacity": 30 if stack else 10}
    if stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    p["fieldConfig"]["defaults"]["custom"] = custom
    return p


UP_DOWN = [{"type": "value", "options": {"0": {"text": "DOWN", "color": "red"}, "1": {"text": "UP", "color": "green"}}}]
RED_GREEN = [{"color": "red", "value": None}, {"color": "green", "value": 1}]


def dashboard() -> dict:
    panels = [
        stat(
            "Service up",
            "Prometheus can scrape the API (alert FerServiceDown when 0 for 1m).",
            'min(up{job="fer-api"})',
            (0, 0, 4, 4),
            mappings=UP_DOWN,
            thresholds=RED_GREEN,
        ),
        stat(
            "Model ready",
            "A model is loaded and serving (alert FerModelNotReady when 0 for 2m).",
            "min(fer_model_ready)",
            (4, 0, 4, 4),
            mappings=[
                {
                    "type": "value",
                    "options": {"0": {"text": "NOT READY", "color": "red"}, "1": {"text": "READY", "color": "green"}},
                }
            ],
            thresholds=RED_GREEN,
        ),
        stat(
            "Model version",
            "Name and registry version being served.",
            "max by (name, version) (fer_model_info) == 1",
            (8, 0, 6, 4),
            legend="{{name}} v{{version}}",
            text="name",
        ),
        stat(
            "Model load failures",
            "Models refused since start (corrupt file, failed smoke test).",
            "sum(fer_model_load_failures_total)",
            (14, 0, 4, 4),
            thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}],
        ),
        stat(
            "Prediction drift",
            "Total variation distance between the last hour's predicted emotions and the "
            "FER-2013 class prior (alert FerPredictionDrift above 0.3).",
            DRIFT,
            (18, 0, 6, 4),
            unit="percentunit",
            thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 0.3}],
        ),
        series(
            "Request rate",
            "Requests per second by route and status.",
            [target(f"sum by (route, status) (rate(fer_http_requests_total[{RATE}]))", "{{route}} {{status}}")],
            (0, 4, 12, 8),
            unit="reqps",
        ),
        series(
            "Error rate",
            "Share of requests answered 5xx (server faults; alert FerHighErrorRate above 5%) "
            "and 4xx (bad client input).",
            [target(ERROR_5XX, "5xx"), target(ERROR_4XX, "4xx")],
            (12, 4, 12, 8),
            unit="percentunit",
        ),
        series(
            "/predict latency",
            "Percentiles of POST /predict latency (alert FerHighLatency: p95 above 500 ms).",
            [
                target(quantile(q, "fer_http_request_duration_seconds", PREDICT), f"p{round(q * 100)}")
                for q in (0.5, 0.95, 0.99)
            ],
            (0, 12, 12, 8),
            unit="s",
        ),
        series(
            "Model time per image",
            "Face detection and emotion model time per image (p50, p95).",
            [
                target(quantile(q, f"fer_{stage}_duration_seconds"), f"{stage} p{round(q * 100)}")
                for stage in ("detection", "inference")
                for q in (0.5, 0.95)
            ],
            (12, 12, 12, 8),
            unit="s",
        ),
        series(
            "Predictions by emotion",
            "Faces classified per second, by predicted emotion.",
            [target(f"sum by (emotion) (rate(fer_predictions_total[{RATE}]))", "{{emotion}}")],
            (0, 20, 12, 8),
            unit="short",
            stack=True,
        ),
        panel(
            "heatmap",
            "Confidence distribution",
            "Top-class probability per face over time (alert FerLowConfidence: median below 0.4 for 30m).",
            [target(f"sum by (le) (increase(fer_prediction_confidence_bucket[{RATE}]))", "{{le}}", format="heatmap")],
            (12, 20, 12, 8),
            unit="short",
            calculate=False,
            yAxis={"unit": "percentunit"},
            color={"scheme": "Oranges", "mode": "scheme"},
            cellGap=1,
        ),
        series(
            "Faces per image",
            "Mean and p95 of faces found per analysed image.",
            [
                target(
                    f"sum(rate(fer_faces_per_image_sum[{RATE}])) / sum(rate(fer_faces_per_image_count[{RATE}]))", "mean"
                ),
                target(quantile(0.95, "fer_faces_per_image"), "p95"),
            ],
            (0, 28, 12, 8),
        ),
        series(
            "No-face rate",
            "Share of analysed images with no detectable face (alert FerHighNoFaceRate above 50% for 15m).",
            [target(NO_FACE, "no face")],
            (12, 28, 12, 8),
            unit="percentunit",
        ),
        series(
            "Shadow model",
            "The shadow candidate (FER_SHADOW_MODEL) on the same live faces: share of faces it answers "
            "differently from production (alert FerShadowDisagrees above 25% for 30m), its median confidence, "
            "and the share of images it skipped because the server had no core to spare.",
            [
                target(
                    f'sum(rate(fer_shadow_predictions_total{{agreed="false"}}[{RATE}])) '
                    f"/ sum(rate(fer_shadow_predictions_total[{RATE}]))",
                    "disagreement",
                ),
                target(quantile(0.5, "fer_shadow_confidence"), "median confidence", ref="B"),
                target(
                    f"sum(rate(fer_shadow_skipped_total[{RATE}])) / (sum(rate(fer_shadow_skipped_total[{RATE}])) "
                    f"+ sum(rate(fer_shadow_inference_duration_seconds_count[{RATE}])))",
                    "skipped (busy)",
                    ref="C",
                ),
            ],
            (0, 36, 12, 8),
            unit="percentunit",
        ),
        series(
            "Estimated live accuracy",
            "Mean top-class probability: with calibrated probabilities, an estimate of accuracy that needs no "
            "labels (alert FerEstimatedAccuracyLow below 0.55 for 1h; PrivateTest about 0.68).",
            [
                target(
                    f"sum(rate(fer_prediction_confidence_sum[{RATE}])) "
                    f"/ sum(rate(fer_prediction_confidence_count[{RATE}]))",
                    "estimated accuracy",
                )
            ],
            (12, 36, 12, 8),
            unit="percentunit",
        ),
    ]
    for i, p in enumerate(panels, 1):
        p["id"] = i
    return {
        "uid": "fer-overview",
        "title": "fer: facial emotion recognition",
        "tags": ["fer"],
        "description": "Traffic, errors, latency, model time and prediction quality of the fer API.",
        "timezone": "browser",
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": []},
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [{"title": "API docs", "type": "link", "url": "http://localhost:8000/docs", "targetBlank": True}],
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
