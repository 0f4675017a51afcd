"""Render cluster/grafana/inference-dashboard.json: the service's Grafana dashboard.

Panels are declared here as (title, unit, queries) so the JSON stays reviewable as code and
every query is written against deployments/telemetry/metrics.py's names (Ray prefixes them
`ray_` and suffixes counters `_total`). The integration suite scrapes a live service and
checks that every metric a panel queries was really exported.

    python cluster/grafana/render_dashboard.py   # rewrites the JSON
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("inference-dashboard.json")
M = '{model=~"$model"}'
W = "[$__rate_interval]"
PREDICT = 'endpoint=~".*(predict|infer)"'


def sel(**labels: str) -> str:
    """A selector for the chosen models plus exact labels: sel(result="hit")."""
    extra = "".join(f', {k}="{v}"' for k, v in labels.items())
    return '{model=~"$model"' + extra + "}"


def q(expr: str, legend: str = "") -> dict[str, str]:
    return {"expr": expr, "legend": legend}


ROWS: list[tuple[str, list[tuple[str, str, list[dict[str, str]]]]]] = [
    (
        "Traffic and latency",
        [
            (
                "Requests/s by endpoint and status",
                "reqps",
                [
                    q(
                        f"sum by (endpoint, status) (rate(ray_inference_requests_total{M}{W}))",
                        "{{endpoint}} {{status}}",
                    )
                ],
            ),
            (
                "Inference latency (ingress total)",
                "ms",
                [
                    q(
                        f"histogram_quantile({p}, sum by (le) (rate("
                        "ray_inference_request_latency_ms_bucket"
                        f'{{model=~"$model", {PREDICT}}}{W})))',
                        f"p{int(p * 100)}",
                    )
                    for p in (0.5, 0.9, 0.99)
                ],
            ),
            (
                "p99 latency by stage",
                "ms",
                [
                    q(
                        "histogram_quantile(0.99, sum by (le, stage, version) "
                        f"(rate(ray_inference_stage_latency_ms_bucket{M}{W})))",
                        "{{stage}} v{{version}}",
                    )
                ],
            ),
            (
                "Share of answers that are 5xx",
                "percentunit",
                [
                    # `or vector(0)`: no 5xx yet is a share of 0, not "no data".
                    q(
                        '(sum(rate(ray_inference_requests_total{model=~"$model", status=~"5.."}'
                        f"{W})) or vector(0))"
                        f" / sum(rate(ray_inference_requests_total{M}{W}))",
                        "5xx share",
                    )
                ],
            ),
            (
                "Admission rejections/s by reason",
                "reqps",
                [
                    q(
                        f"sum by (reason) (rate(ray_admission_rejections_total{M}{W}))",
                        "{{reason}}",
                    )
                ],
            ),
        ],
    ),
    (
        "Batching and cache",
        [
            (
                "Rows per forward pass (p50, p99)",
                "short",
                [
                    q(
                        f"histogram_quantile({p}, sum by (le, version) "
                        f"(rate(ray_inference_batch_rows_bucket{M}{W})))",
                        f"p{int(p * 100)} v{{{{version}}}}",
                    )
                    for p in (0.5, 0.99)
                ],
            ),
            (
                "Requests per forward pass (p50)",
                "short",
                [
                    q(
                        "histogram_quantile(0.5, sum by (le, version) "
                        f"(rate(ray_inference_batch_requests_bucket{M}{W})))",
                        "v{{version}}",
                    )
                ],
            ),
            (
                "Result-cache hit ratio",
                "percentunit",
                [
                    q(
                        # 0 while the cache is off or paused (no lookups), not 0/0.
                        f"sum(rate(ray_result_cache_lookups_total{sel(result='hit')}{W}))"
                        f" / clamp_min(sum(rate(ray_result_cache_lookups_total{M}{W})), 1e-9)",
                        "hit ratio",
                    )
                ],
            ),
        ],
    ),
    (
        "Predictions and input drift",
        [
            (
                "Score quantiles by version",
                "short",
                [
                    q(
                        f"histogram_quantile({p}, sum by (le, version) "
                        f"(rate(ray_prediction_score_bucket{M}{W})))",
                        f"p{int(p * 100)} v{{{{version}}}}",
                    )
                    for p in (0.5, 0.9)
                ],
            ),
            (
                "Predicted label share by version",
                "percentunit",
                [
                    q(
                        f"sum by (version, label) (rate(ray_prediction_labels_total{M}{W}))"
                        " / ignoring(label) group_left "
                        f"sum by (version) (rate(ray_prediction_labels_total{M}{W}))",
                        "v{{version}} {{label}}",
                    )
                ],
            ),
            (
                "Drift score (PSI vs training) by feature",
                "short",
                [
                    q(
                        f"max by (model, version, feature) (ray_input_feature_drift_psi{M})",
                        "{{feature}} v{{version}}",
                    ),
                    q(
                        f"max by (model, version) (ray_prediction_drift_psi{M})",
                        "prediction v{{version}}",
                    ),
                    q(
                        f"max by (model, version) (ray_drift_psi_threshold{M})",
                        "threshold",
                    ),
                ],
            ),
            (
                "Rows beyond 3 training std devs, by feature (drift)",
                "percentunit",
                [
                    q(
                        "sum by (feature) (rate(ray_input_feature_zscore_rows_total"
                        '{model=~"$model", band=~"\\\\(-inf,-3\\\\]|\\\\(3,inf\\\\)"}'
                        f"{W})) / sum by (feature) "
                        f"(rate(ray_input_feature_zscore_rows_total{M}{W}))",
                        "{{feature}}",
                    )
                ],
            ),
            (
                "Numeric features by z-score band (last 15 min)",
                "percentunit",
                [
                    q(
                        "sum by (feature, band) (increase(ray_input_feature_zscore_rows_total"
                        f"{M}[15m])) / ignoring(band) group_left sum by (feature) "
                        f"(increase(ray_input_feature_zscore_rows_total{M}[15m]))",
                        "{{feature}} {{band}}",
                    )
                ],
            ),
            (
                "Categorical feature mix",
                "percentunit",
                [
                    q(
                        "sum by (feature, value) (rate(ray_input_feature_category_rows_total"
                        f"{M}{W})) / ignoring(value) group_left sum by (feature) "
                        f"(rate(ray_input_feature_category_rows_total{M}{W}))",
                        "{{feature}}={{value}}",
                    )
                ],
            ),
            (
                "Invalid inputs: row share and values by field",
                "short",
                [
                    q(
                        f"sum(rate(ray_input_rows_total{sel(outcome='invalid')}{W}))"
                        f" / sum(rate(ray_input_rows_total{M}{W}))",
                        "invalid row share",
                    ),
                    q(
                        "sum by (feature, error_type) "
                        f"(rate(ray_input_feature_invalid_values_total{M}{W}))",
                        "{{feature}} {{error_type}}/s",
                    ),
                ],
            ),
        ],
    ),
    (
        "Shadow candidate",
        [
            (
                "Label agreement, candidate vs primary",
                "percentunit",
                [
                    q(
                        "sum by (primary_version, candidate_version) (rate("
                        f"ray_shadow_compared_rows_total{sel(agreement='agree')}{W}))"
                        " / sum by (primary_version, candidate_version) "
                        f"(rate(ray_shadow_compared_rows_total{M}{W}))",
                        "v{{candidate_version}} vs v{{primary_version}}",
                    )
                ],
            ),
            (
                "|score delta| p90",
                "short",
                [
                    q(
                        "histogram_quantile(0.9, sum by (le, candidate_version) "
                        f"(rate(ray_shadow_abs_score_delta_bucket{M}{W})))",
                        "v{{candidate_version}}",
                    )
                ],
            ),
            (
                "Mirrored requests/s",
                "reqps",
                [q(f"sum(rate(ray_shadow_mirrored_requests_total{M}{W}))", "mirrored")],
            ),
        ],
    ),
]


def panel(panel_id: int, title: str, unit: str, queries: list[dict[str, str]], x: int, y: int):
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 8, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "expr": query["expr"],
                "legendFormat": query["legend"],
            }
            for i, query in enumerate(queries)
        ],
    }


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    for row_title, row_panels in ROWS:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        for i, (title, unit, queries) in enumerate(row_panels):
            x = (i % 3) * 8
            if i and i % 3 == 0:
                y += 8
            panels.append(panel(next_id, title, unit, queries, x, y))
            next_id += 1
        y += 8
    return {
        "uid": "ray-serve-inference",
        "title": "Ray Serve inference service",
        "description": "Traffic, stage latency, batching, predictions, input drift and the "
        "shadow candidate. Metrics from deployments/telemetry/metrics.py via Ray's metrics agents.",
        "tags": ["ray-serve", "inference"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                },
                {
                    "name": "model",
                    "label": "Model",
                    "type": "query",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": {"query": "label_values(ray_inference_requests_total, model)"},
                    "definition": "label_values(ray_inference_requests_total, model)",
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {"text": "All", "value": "$__all"},
                },
            ]
        },
        "panels": panels,
    }


def main() -> None:
    OUT.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
