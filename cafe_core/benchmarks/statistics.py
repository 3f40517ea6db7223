"""Intervals for the tables: how far a mean over training seeds and held-out subjects can be trusted."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["Interval", "score_grid", "seeds_and_subjects_interval"]


@dataclass(frozen=True)
class Interval:
    """A mean over (training seed, subject) cells with its 95% interval and where the width comes from.

    ``subjects_half_width`` is the half-width when only the subjects are resampled (the seeds
    kept), ``seeds_half_width`` when only the seeds are: the two parts of ``half_width``.
    """

    mean: float
    low: float
    high: float
    seeds: int
    subjects: int
    seeds_half_width: float
    subjects_half_width: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def to_dict(self) -> dict:
        return {
            "value": self.mean,
            "ci95": [self.low, self.high],
            "half_width": self.half_width,
            "seeds": self.seeds,
            "subjects": self.subjects,
            "half_width_from_seeds": self.seeds_half_width,
            "half_width_from_subjects": self.subjects_half_width,
        }


def seeds_and_subjects_interval(values: np.ndarray, *, seed: int, resamples: int = 2000) -> Interval:
    """95% interval of the mean of ``values`` (training seeds, subjects), by a two-way bootstrap.

    Every seed is evaluated on the same subjects (a crossed design), so each resample draws seeds
    and subjects independently, with replacement, and takes the mean of the drawn cells: the
    interval holds both the variation between training runs and the sampling of subjects. For a
    paired comparison pass the cell-wise difference of two rows. NaN cells (a subject a seed did
    not score) are left out of each mean. With one seed the interval covers the subjects only.
    """
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 2 or 0 in data.shape:
        raise ValueError(f"values must be (seeds, subjects) with both non-empty, got shape {data.shape}")
    if np.isnan(data).all():
        raise ValueError("values has no scored cell")
    rng = np.random.default_rng([seed, 0xB007])
    n_seeds, n_subjects = data.shape

    def draws(resample_seeds: bool, resample_subjects: bool) -> np.ndarray:
        rows = np.tile(np.arange(n_seeds), (resamples, 1))
        cols = np.tile(np.arange(n_subjects), (resamples, 1))
        for k in range(resamples):  # drawn one resample at a time: the stream the intervals were published with
            if resample_seeds:
                rows[k] = rng.integers(n_seeds, size=n_seeds)
            if resample_subjects:
                cols[k] = rng.integers(n_subjects, size=n_subjects)
        cells = data[rows[:, :, None], cols[:, None, :]].reshape(resamples, -1)
        with warnings.catch_warnings():  # a draw of only unscored cells is NaN, left out below
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(cells, axis=1)

    def half(sample: np.ndarray) -> float:
        low, high = np.nanpercentile(sample, [2.5, 97.5])
        return float(high - low) / 2

    both = draws(True, True)
    low, high = np.nanpercentile(both, [2.5, 97.5])
    return Interval(
        mean=float(np.nanmean(data)),
        low=float(low),
        high=float(high),
        seeds=n_seeds,
        subjects=n_subjects,
        seeds_half_width=half(draws(True, False)) if n_seeds > 1 else 0.0,
        subjects_half_width=half(draws(False, True)),
    )


def score_grid(rows: Mapping[int, list[dict]], metric: str, domain: str, subjects: list[str]) -> np.ndarray:
    """(seeds, subjects) scores of one variant on ``metric`` in ``domain``, from each training seed's
    per-subject rows (``{"subject", "domain", metric: value}``); NaN where a cell is unscored."""
    out = np.full((len(rows), len(subjects)), np.nan)
    column = {s: i for i, s in enumerate(subjects)}
    for k, seed in enumerate(sorted(rows)):
        for row in rows[seed]:
            if row["domain"] == domain and row.get(metric) is not None and row["subject"] in column:
                out[k, column[row["subject"]]] = row[metric]
    return out
