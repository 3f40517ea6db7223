"""Intervals for the tables: how far a mean over held-out subjects can be trusted."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["bootstrap_ci"]


def bootstrap_ci(values: Sequence[float], *, seed: int, resamples: int = 2000) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of ``values`` (one value per subject).

    scipy's bootstrap resamples the subjects with replacement; a single value has no spread to
    resample, so its interval is the value itself.
    """
    from scipy.stats import bootstrap

    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 1 or len(data) == 0:
        raise ValueError(f"values must be a non-empty 1-d sequence, got shape {data.shape}")
    if len(data) == 1 or np.all(data == data[0]):
        return float(data[0]), float(data[0])
    result = bootstrap((data,), np.mean, confidence_level=0.95, n_resamples=resamples, method="percentile", rng=seed)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)
