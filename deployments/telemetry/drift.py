"""Input-distribution recording for drift: what the Validator saw, feature by feature.

Numeric features are recorded as the model sees them (after the training transform and
normalisation), so one set of histogram buckets serves every feature and "drifted" reads the
same everywhere: mass moving away from the training mean 0 / std 1. Categorical and boolean
features are counted by value; absent optional features and refused values are counted by
field, against the validated-rows counter as denominator.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel

from deployments.errors import InvalidInput
from deployments.metadata import ModelMetadata
from deployments.telemetry.metrics import ZSCORE_BAND_EDGES, ZSCORE_BANDS


class DriftSink(Protocol):
    rows: Any
    numeric: Any
    category: Any
    missing: Any
    invalid: Any


class DriftRecorder:
    def __init__(self, metadata: ModelMetadata, sink: DriftSink) -> None:
        self.sink = sink
        self.numeric: list[tuple[str, int]] = []  # (feature, column in the feature matrix)
        self.categorical: list[str] = []
        self.optional = [f.name for f in metadata.features if not f.required]
        self.known = {f.name for f in metadata.features}
        col = 0
        for feature in metadata.features:
            if feature.type == "category":
                self.categorical.append(feature.name)
                col += len(feature.categories or ())
            else:
                if feature.type == "bool":
                    self.categorical.append(feature.name)
                else:
                    self.numeric.append((feature.name, col))
                col += 1

    def valid(self, records: list[BaseModel], matrix: np.ndarray) -> None:
        n = len(records)
        if n == 0:
            return
        self.sink.rows.inc(n, {"outcome": "valid"})
        for name, col in self.numeric:
            bands = np.searchsorted(ZSCORE_BAND_EDGES, matrix[:, col], side="left")
            for band, count in enumerate(np.bincount(bands, minlength=len(ZSCORE_BANDS))):
                if count:
                    self.sink.numeric.inc(int(count), {"feature": name, "band": ZSCORE_BANDS[band]})
        for name in self.categorical:
            counts: dict[str, int] = {}
            for record in records:
                value = str(getattr(record, name)).lower()
                counts[value] = counts.get(value, 0) + 1
            for value, count in counts.items():
                self.sink.category.inc(count, {"feature": name, "value": value})
        for name in self.optional:
            absent = sum(1 for r in records if name not in r.model_fields_set)
            if absent:
                self.sink.missing.inc(absent, {"feature": name})

    def invalid(self, error: InvalidInput, instances: int) -> None:
        bad_rows = {d.get("instance") for d in error.details if d.get("instance") is not None}
        self.sink.rows.inc(len(bad_rows) or max(instances, 1), {"outcome": "invalid"})
        for detail in error.details:
            field = str(detail.get("field") or "_instance")
            # Clients choose unknown field names: one label value for all of them keeps the
            # series count bounded.
            if field != "_instance" and field not in self.known:
                field = "_unknown"
            error_type = str(detail.get("type") or "invalid")
            self.sink.invalid.inc(1, {"feature": field, "error_type": error_type})
