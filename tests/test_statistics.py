"""Intervals over training seeds and subjects, and the verdicts they give the paper's claims."""

import numpy as np
import pytest

from cafe_core.benchmarks.claims import CLAIMS, CONTROLS, Claim, judge
from cafe_core.benchmarks.statistics import score_grid, seeds_and_subjects_interval
from cafe_core.benchmarks.tables import interval_rows


def _rows(values_by_subject: dict[str, float], metric: str = "ID", domain: str = "face") -> list[dict]:
    return [{"subject": s, "domain": domain, metric: v} for s, v in values_by_subject.items()]


def test_interval_covers_the_mean_and_narrows_with_more_subjects():
    rng = np.random.default_rng(0)
    few = seeds_and_subjects_interval(rng.normal(0.5, 0.1, (1, 8)))
    many = seeds_and_subjects_interval(rng.normal(0.5, 0.1, (1, 128)))
    assert few.low < few.mean < few.high and many.low < 0.5 < many.high
    assert many.half_width < few.half_width / 2
    assert few.seeds_half_width == 0.0 and few.subjects_half_width == pytest.approx(few.half_width, rel=0.3)


@pytest.mark.parametrize(
    ("seed_sd", "subject_sd", "noise_sd"),
    [(1.0, 1.0, 1.0), (1.0, 0.2, 0.5), (0.1, 1.0, 1.0)],
    ids=["seeds-and-subjects-vary", "seeds-vary-most", "subjects-vary-most"],
)
def test_the_95_percent_interval_covers_the_true_mean_95_percent_of_the_time(seed_sd, subject_sd, noise_sd):
    """Drawn from the crossed design the tables have (3 training seeds, 32 subjects, each seed
    scoring every subject): the interval must cover the true mean about as often as it says, also
    when training seeds disagree. The two-way bootstrap over three seeds covered 78%, 73% and 94%
    of these draws; this interval covers 91%, 94% and 94%."""
    rng = np.random.default_rng(3)
    draws, covered = 400, 0
    for _ in range(draws):
        seeds, subjects = seed_sd * rng.normal(size=(3, 1)), subject_sd * rng.normal(size=(1, 32))
        interval = seeds_and_subjects_interval(seeds + subjects + noise_sd * rng.normal(size=(3, 32)))
        covered += interval.low <= 0.0 <= interval.high
    assert 0.90 <= covered / draws <= 0.99


def test_unscored_cells_leave_out_their_subject_and_one_cell_has_no_interval():
    grid = np.array([[0.1, 0.2, 0.9], [0.3, np.nan, 0.5], [np.nan, np.nan, np.nan]])
    interval = seeds_and_subjects_interval(grid)  # the third seed scored nothing, the second skipped "b"
    assert (interval.seeds, interval.subjects) == (2, 2)
    assert interval.mean == pytest.approx(np.mean([0.1, 0.9, 0.3, 0.5]))
    one = seeds_and_subjects_interval(np.array([[0.5, np.nan], [np.nan, np.nan]]))
    assert one.mean == 0.5 and np.isnan(one.low) and np.isnan(one.high)
    with pytest.raises(ValueError, match="every seed"):
        seeds_and_subjects_interval(np.array([[0.5, np.nan], [np.nan, 0.4]]))


def test_the_interval_holds_the_variation_between_training_seeds():
    """Seeds that disagree widen the interval even when every seed is sure of its own mean."""
    subjects = np.random.default_rng(1).normal(0, 0.01, 64)
    agree = seeds_and_subjects_interval(0.5 + subjects[None].repeat(3, 0))
    disagree = seeds_and_subjects_interval(np.array([0.3, 0.5, 0.7])[:, None] + subjects[None])
    assert disagree.half_width > 10 * agree.half_width
    assert disagree.seeds_half_width > 10 * disagree.subjects_half_width


def test_score_grid_aligns_subjects_and_leaves_unscored_cells_empty():
    rows = {0: _rows({"a": 0.1, "b": 0.2}), 1: _rows({"b": 0.4})}
    grid = score_grid(rows, "ID", "face", ["a", "b"])
    assert grid[0].tolist() == [0.1, 0.2] and np.isnan(grid[1, 0]) and grid[1, 1] == 0.4
    assert np.isnan(score_grid(rows, "CLIP-T", "face", ["a"])).all()


@pytest.mark.parametrize(("shift", "verdict"), [(0.2, "holds"), (-0.2, "reversed"), (0.0, "within_noise")])
def test_a_claim_is_judged_on_the_paired_difference(shift, verdict):
    rng = np.random.default_rng(2)
    difficulty = rng.uniform(0, 1, 32)  # subjects differ far more than the two rows do
    noise = lambda: rng.normal(0, 0.05, 32)  # noqa: E731
    names = [f"s{i}" for i in range(32)]
    scores = {
        "higher": {s: _rows(dict(zip(names, difficulty + shift + noise()))) for s in range(3)},
        "lower": {s: _rows(dict(zip(names, difficulty + noise()))) for s in range(3)},
    }
    out = judge(Claim("higher beats lower", "ID", "face", "higher", "lower"), scores)
    assert out["verdict"] == verdict and out["seeds"] == 3 and out["subjects"] == 32
    assert out["ci95"][0] <= out["difference"] <= out["ci95"][1]


def test_a_claim_on_a_domain_the_data_lacks_is_not_measured_rather_than_decided():
    """DreamBench has objects only: a claim about faces gets no verdict, and says why."""
    scores = {"higher": {0: _rows({"a": 0.5}, domain="object")}, "lower": {0: _rows({"a": 0.4}, domain="object")}}
    out = judge(Claim("higher beats lower", "ID", "face", "higher", "lower"), scores)
    assert out["verdict"] == "not_measured" and out["difference"] is None and out["ci95"] is None
    assert "share no scored face subject" in out["why"]


def test_rows_with_intervals_are_means_over_seeds_and_subjects():
    rows = {0: _rows({"a": 0.2, "b": 0.4}) + _rows({"a": 0.5}, "CLIP-T", "object"), 1: _rows({"a": 0.4, "b": 0.6})}
    face, obj = interval_rows("both", rows)
    assert (face.domain, face.ID, face.seeds) == ("face", pytest.approx(0.4), 2) and face.ci95["ID"] > 0
    assert face.CLIP_T is None and "CLIP-T" not in face.ci95
    assert (obj.domain, obj.CLIP_T) == ("object", 0.5)


def test_every_claim_names_rows_its_table_has():
    import yaml

    from cafe_core.workbench.config import project_root

    ablations = yaml.safe_load((project_root() / "params.yaml").read_text())["ablations"]
    for target, claims in (*CLAIMS.items(), *CONTROLS.items()):
        assert all({c.higher, c.lower} <= set(ablations[target]) for c in claims), target
