"""Intervals for the tables: how far a mean over training seeds and held-out subjects can be trusted."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["METHOD", "Interval", "score_grid", "seeds_and_subjects_interval"]

METHOD = "t interval with seeds and subjects both random (two-way ANOVA, Satterthwaite's degrees of freedom)"
"""How :func:`seeds_and_subjects_interval` makes its 95% interval, as the tables and the report name it."""


@dataclass(frozen=True)
class Interval:
    """A mean over (training seed, subject) cells with its 95% interval and where the width comes from.

    ``seeds_half_width`` is the half-width were the subjects fixed and only the training seeds a
    sample, ``subjects_half_width`` were the seeds fixed: the two parts of ``half_width``.
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


def seeds_and_subjects_interval(values: np.ndarray) -> Interval:
    """95% interval of the mean of ``values`` (training seeds, subjects), seeds and subjects both random.

    Every seed is evaluated on the same subjects (a crossed design), and both are samples: of the
    training runs the method could have had, and of the subjects it could meet. The variance of the
    mean comes from the two-way analysis of variance (mean squares of seeds, subjects and residual;
    a negative variance component is taken as zero), and the interval is Student's t with
    Satterthwaite's degrees of freedom. With three seeds the seeds' mean square has two degrees of
    freedom, so where seeds disagree the interval is wide (t near 4.3): that is what three training
    runs can tell. In simulated draws of that design (3 seeds, 32 subjects) it covered the true mean
    92 to 96% of the time (4,000 draws per mix of seed, subject and residual variance; Satterthwaite
    runs a little liberal when the seeds' part rests on two degrees of freedom). The two-way
    percentile bootstrap used before covered 73 to 78% where seeds vary (tests/test_statistics.py):
    resampling three seeds cannot show how far a fourth might fall.

    For a paired comparison pass the cell-wise difference of two rows. NaN cells (a subject a seed
    did not score) are handled by keeping the seeds that scored anything and the subjects every
    one of them scored. With one seed the interval covers the subjects only, with one subject the
    seeds only; one cell has no interval (NaN bounds).
    """
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 2 or 0 in data.shape:
        raise ValueError(f"values must be (seeds, subjects) with both non-empty, got shape {data.shape}")
    if np.isnan(data).all():
        raise ValueError("values has no scored cell")
    data = data[~np.isnan(data).all(axis=1)]
    data = data[:, ~np.isnan(data).any(axis=0)]
    if data.shape[1] == 0:
        raise ValueError("no subject was scored by every seed that scored any: the seeds cannot be compared")
    n_seeds, n_subjects = data.shape
    mean = float(data.mean())
    seed_means, subject_means = data.mean(axis=1), data.mean(axis=0)
    cells = n_seeds * n_subjects
    # mean squares of the two-way layout with one observation per cell
    ms_seeds = n_subjects * np.sum((seed_means - mean) ** 2) / (n_seeds - 1) if n_seeds > 1 else 0.0
    ms_subjects = n_seeds * np.sum((subject_means - mean) ** 2) / (n_subjects - 1) if n_subjects > 1 else 0.0

    def part(ms: float, df: int) -> float:
        """Half-width with one factor a sample and the other fixed: t(df) * sqrt(MS / cells)."""
        return float(stats.t.ppf(0.975, df) * np.sqrt(ms / cells)) if df > 0 else 0.0

    if cells == 1:
        half = float("nan")
    elif n_subjects == 1:  # one factor: a plain t interval over the other
        half = part(ms_seeds, n_seeds - 1)
    elif n_seeds == 1:
        half = part(ms_subjects, n_subjects - 1)
    else:
        residual = data - seed_means[:, None] - subject_means[None, :] + mean
        df = {"seeds": n_seeds - 1, "subjects": n_subjects - 1, "residual": (n_seeds - 1) * (n_subjects - 1)}
        ms = {"seeds": ms_seeds, "subjects": ms_subjects, "residual": np.sum(residual**2) / df["residual"]}
        # Var(mean) = s2_seed / seeds + s2_subject / subjects + s2_residual / cells, and E[MS_seeds] =
        # s2_residual + subjects * s2_seed (subjects alike), so cells * Var(mean) is estimated by
        # MS_residual + max(MS_seeds - MS_residual, 0) + max(MS_subjects - MS_residual, 0)
        coef = {"seeds": 0.0, "subjects": 0.0, "residual": 1.0}
        for factor in ("seeds", "subjects"):
            if ms[factor] > ms["residual"]:
                coef[factor], coef["residual"] = 1.0, coef["residual"] - 1.0
        total = sum(coef[k] * ms[k] for k in ms)
        if total > 0:
            dof = total**2 / sum((coef[k] * ms[k]) ** 2 / df[k] for k in ms)  # Satterthwaite
            half = float(stats.t.ppf(0.975, dof) * np.sqrt(total / cells))
        else:  # every cell equal
            half = 0.0
    return Interval(
        mean=mean,
        low=mean - half,
        high=mean + half,
        seeds=n_seeds,
        subjects=n_subjects,
        seeds_half_width=part(ms_seeds, n_seeds - 1),
        subjects_half_width=part(ms_subjects, n_subjects - 1),
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
