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

from deployments.errors import InvalidInput
from deployments.kinds.tabular_schema import TabularMetadata
from deployments.repository.reference import Distribution, DriftReference
from deployments.telemetry.metrics import ZSCORE_BAND_EDGES, ZSCORE_BANDS

BOOL_VALUES = ["false", "true"]


class DriftSink(Protocol):
    rows: Any
    numeric: Any
    category: Any
    missing: Any
    invalid: Any


class FeatureLayout:
    """Where each feature sits in the feature matrix, and its counts in the reference's bins:
    numbers standardised in one column, a category as a one-hot block, a bool as 0/1."""

    def __init__(self, metadata: TabularMetadata) -> None:
        self.numeric: list[tuple[str, int]] = []  # (feature, column in the feature matrix)
        self.categories: list[tuple[str, int, list[str]]] = []  # (feature, first column, values)
        self.bools: list[tuple[str, int]] = []
        col = 0
        for feature in metadata.features:
            if feature.type == "category":
                values = [str(c).lower() for c in feature.categories or ()]
                self.categories.append((feature.name, col, values))
                col += len(values)
            elif feature.type == "bool":
                self.bools.append((feature.name, col))
                col += 1
            else:
                self.numeric.append((feature.name, col))
                col += 1

    def value_counts(self, matrix: np.ndarray) -> list[tuple[str, list[str], np.ndarray]]:
        """Categorical and bool features: (feature, its values, rows per value)."""
        out = []
        for name, col, values in self.categories:
            out.append(
                (name, values, np.count_nonzero(matrix[:, col : col + len(values)] > 0.5, axis=0))
            )
        for name, col in self.bools:
            true = int(np.count_nonzero(matrix[:, col] > 0.5))
            out.append((name, BOOL_VALUES, np.array([len(matrix) - true, true])))
        return out

    def reference(self, matrix: np.ndarray) -> dict[str, Distribution]:
        """Training rows' distributions, feature by feature (bins chosen here)."""
        out = {name: Distribution.numeric(matrix[:, col]) for name, col in self.numeric}
        for name, values, counts in self.value_counts(matrix):
            out[name] = Distribution.categorical(values, counts)
        return out

    def counts(
        self,
        matrix: np.ndarray,
        reference: DriftReference,
        valued: list[tuple[str, list[str], np.ndarray]] | None = None,
    ) -> dict[str, np.ndarray]:
        """Rows per reference bin, feature by feature: one vectorised pass per feature
        (`valued`: this matrix's `value_counts`, when the caller has them already)."""
        out = {name: reference.features[name].count(matrix[:, col]) for name, col in self.numeric}
        for name, _, counts in self.value_counts(matrix) if valued is None else valued:
            out[name] = counts
        return out


class DriftRecorder:
    """Counts validated rows from the feature matrix itself (one-hot blocks, bool columns,
    standardised numbers), so it needs nothing per request beyond the arrays that travel.
    With a training reference and a window, it also counts them into the reference's bins
    for the drift scores."""

    def __init__(
        self,
        metadata: TabularMetadata,
        sink: DriftSink,
        reference: DriftReference | None = None,
        window: Any | None = None,
    ) -> None:
        self.sink = sink
        self.layout = FeatureLayout(metadata)
        self.optional = [f.name for f in metadata.features if not f.required]
        self.known = {f.name for f in metadata.features}
        self.reference = reference
        self.window = window if reference is not None else None

    def record(self, matrix: np.ndarray, absent: np.ndarray | None = None) -> None:
        """Validated rows: `matrix` the features, `absent` [rows, optional features]."""
        n = len(matrix)
        if n == 0:
            return
        self.sink.rows.inc(n, {"outcome": "valid"})
        for name, col in self.layout.numeric:
            bands = np.searchsorted(ZSCORE_BAND_EDGES, matrix[:, col], side="left")
            for band, count in enumerate(np.bincount(bands, minlength=len(ZSCORE_BANDS))):
                if count:
                    self.sink.numeric.inc(int(count), {"feature": name, "band": ZSCORE_BANDS[band]})
        valued = self.layout.value_counts(matrix)
        for name, values, counts in valued:
            for value, count in zip(values, counts.tolist()):
                if count:
                    self.sink.category.inc(count, {"feature": name, "value": value})
        if absent is not None:
            for name, count in zip(self.optional, absent.sum(axis=0).tolist()):
                if count:
                    self.sink.missing.inc(int(count), {"feature": name})
        if self.window is not None:
            self.window.add(self.layout.counts(matrix, self.reference, valued))

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
