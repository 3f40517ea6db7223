"""The tables' bootstrap interval: its time per call, against a resample-at-a-time mean (prints figures; not a test).

    bin/with-env python scripts/benchmark_intervals.py [--seeds 3] [--subjects 32] [--repeats 15]

``seeds_and_subjects_interval`` draws its resamples' indices one resample at a time (the stream
its published intervals came from) and takes all their means at once. The reference below takes
each resample's mean as it is drawn (``np.nanmean`` per resample, the implementation before).
Both run on the same (seeds, subjects) grid with a tenth of its cells unscored (NaN); the script
checks they give the same interval and prints the median time of each and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cafe_core.benchmarks.statistics import seeds_and_subjects_interval  # noqa: E402


def per_resample(values: np.ndarray, *, seed: int, resamples: int = 2000) -> tuple[float, float, float, float]:
    """The interval and its two parts' half-widths, each resample's mean taken as it is drawn."""
    data = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng([seed, 0xB007])
    n_seeds, n_subjects = data.shape

    def draws(resample_seeds: bool, resample_subjects: bool) -> np.ndarray:
        out = np.empty(resamples)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for k in range(resamples):
                rows = rng.integers(n_seeds, size=n_seeds) if resample_seeds else np.arange(n_seeds)
                cols = rng.integers(n_subjects, size=n_subjects) if resample_subjects else np.arange(n_subjects)
                out[k] = np.nanmean(data[np.ix_(rows, cols)])
        return out

    def half(sample: np.ndarray) -> float:
        low, high = np.nanpercentile(sample, [2.5, 97.5])
        return float(high - low) / 2

    low, high = np.nanpercentile(draws(True, True), [2.5, 97.5])
    return float(low), float(high), half(draws(True, False)), half(draws(False, True))


def median_seconds(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--subjects", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    grid = rng.random((args.seeds, args.subjects))
    grid[rng.random(grid.shape) < 0.1] = np.nan
    interval = seeds_and_subjects_interval(grid, seed=7)
    now = (interval.low, interval.high, interval.seeds_half_width, interval.subjects_half_width)
    assert now == per_resample(grid, seed=7), "the two ways disagree"
    new = median_seconds(lambda: seeds_and_subjects_interval(grid, seed=7), args.repeats)
    old = median_seconds(lambda: per_resample(grid, seed=7), args.repeats)
    print(f"grid {args.seeds} seeds x {args.subjects} subjects, 2000 resamples x 3 draws, median of {args.repeats}")
    print(f"  per resample (before): {old * 1000:.1f} ms")
    print(f"  means at once (now):   {new * 1000:.1f} ms")
    print(f"  ratio: {old / new:.2f}x")


if __name__ == "__main__":
    main()
