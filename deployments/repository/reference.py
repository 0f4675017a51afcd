"""The training reference that drift is scored against, stored with the model.

`reference.json` sits beside the weights; `metadata.json` records its sha256 and size as it
does the weights', so an edited or swapped reference is refused like edited weights. It holds
one `Distribution` per input feature and one for the prediction: bins fixed at packaging time
(quantile edges for numbers, the declared values for categories) with the share of training
rows in each. The live window is counted into the same bins, so scoring is a comparison of two
vectors of shares (`psi`). No torch: the validator reads it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deployments.errors import ArtifactError
from deployments.repository.metadata import (
    REFERENCE_FILE,
    ReferenceFile,
    sha256_file,
    verify_checksum,
)

# Deciles: enough bins to see a shift, few enough that a window of a few hundred rows fills
# each of them.
QUANTILES = tuple(i / 10 for i in range(1, 10))
# A bin that is empty on one side would make the index infinite; shares are floored here
# before the logarithm (the usual PSI convention).
SHARE_FLOOR = 1e-4
PREDICTION = "_prediction"


class Distribution(BaseModel):
    """Bins and the share of training rows in each: numeric (`edges`, len+1 bins, a value
    equal to an edge counts in the bin above it) or categorical (`values`, one bin each)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    edges: list[float] | None = None
    values: list[str] | None = None
    shares: list[float] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_kind_of_bins(self) -> Distribution:
        if (self.edges is None) == (self.values is None):
            raise ValueError("a distribution has either edges or values")
        bins = len(self.edges) + 1 if self.edges is not None else len(self.values or ())
        if len(self.shares) != bins:
            raise ValueError(f"{bins} bins but {len(self.shares)} shares")
        if self.edges is not None and sorted(set(self.edges)) != self.edges:
            raise ValueError("edges must be strictly increasing")
        if abs(sum(self.shares) - 1.0) > 1e-6:
            raise ValueError(f"shares sum to {sum(self.shares)}, not 1")
        return self

    @property
    def bins(self) -> int:
        return len(self.shares)

    def count(self, values: np.ndarray) -> np.ndarray:
        """How many of `values` (numeric) fall in each bin."""
        assert self.edges is not None
        index = np.searchsorted(np.asarray(self.edges), values, side="right")
        return np.bincount(index, minlength=self.bins)

    @classmethod
    def numeric(cls, values: np.ndarray) -> Distribution:
        values = np.asarray(values, dtype=np.float64)
        edges = sorted({float(e) for e in np.quantile(values, QUANTILES)})
        # The lowest quantile may equal the minimum (a mass point such as 0): the first bin
        # would then hold nothing, so it goes.
        edges = [e for e in edges if e > values.min()] or edges[-1:]
        counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
        return cls(edges=edges, shares=_shares(counts))

    @classmethod
    def categorical(cls, values: list[str], counts: np.ndarray) -> Distribution:
        return cls(values=list(values), shares=_shares(counts))


class DriftReference(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: Literal[1] = 1
    rows: int = Field(ge=1, description="Training rows the shares come from.")
    features: dict[str, Distribution]
    prediction: Distribution | None = Field(
        default=None, description="The score (classifiers) or first target (regressors)."
    )
    prediction_output: str | None = None


def psi(live_counts: np.ndarray, reference: Distribution) -> float:
    """Population stability index of live bin counts against the reference shares:
    sum((live - ref) * ln(live / ref)). Under 0.1 reads as stable, over 0.2 as drifted."""
    total = float(np.sum(live_counts))
    if total <= 0:
        return float("nan")
    live = np.maximum(np.asarray(live_counts, dtype=np.float64) / total, SHARE_FLOOR)
    ref = np.maximum(np.asarray(reference.shares, dtype=np.float64), SHARE_FLOOR)
    return float(np.sum((live - ref) * np.log(live / ref)))


def write_reference(directory: Path, reference: DriftReference) -> ReferenceFile:
    path = directory / REFERENCE_FILE
    path.write_text(
        json.dumps(reference.model_dump(mode="json", exclude_none=True), indent=1) + "\n"
    )
    return ReferenceFile(sha256=sha256_file(path), size_bytes=path.stat().st_size)


def read_reference(directory: Path, recorded: ReferenceFile) -> DriftReference:
    """The reference, refused unless its checksum matches the one metadata.json records."""
    path = directory / recorded.file
    verify_checksum(path, recorded.sha256)
    try:
        return DriftReference.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise ArtifactError(f"{path} is not a drift reference:\n{exc}") from exc


def _shares(counts: np.ndarray) -> list[float]:
    counts = np.asarray(counts, dtype=np.float64)
    shares = counts / counts.sum()
    return [float(s) for s in shares]
