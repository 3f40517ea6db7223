"""Human filtering's decisions file (cafe_core.data.review): append, undo, resume, the simulated annotator."""

import json
import subprocess
import sys

import pytest

from cafe_core.data.review import ReviewLog, SimulatedAnnotator, accepted

IDS = [f"q{i:04d}" for i in range(6)]


def test_decisions_replace_earlier_ones_and_undo_withdraws_the_latest(tmp_path):
    log = ReviewLog(tmp_path / "review.jsonl")
    log.record("q0000", "accept", reviewer="ana", seconds=2.0)
    log.record("q0001", "reject", reviewer="ana", seconds=3.0)
    log.record("q0001", "accept", reviewer="ana", seconds=1.0)  # changed her mind
    assert log.decisions() == {"q0000": "accept", "q0001": "accept"}
    assert log.undo(reviewer="ana") == "q0001"
    assert log.decisions() == {"q0000": "accept", "q0001": "reject"}
    assert log.undo(reviewer="ana") == "q0001" and log.undo(reviewer="ana") == "q0000"
    assert log.decisions() == {} and log.undo(reviewer="ana") is None
    assert log.pending(IDS) == IDS
    assert log.seconds() == 6.0  # time spent stays spent
    with pytest.raises(ValueError, match="decision must be one of"):
        log.record("q0002", "maybe", reviewer="ana")


def test_a_review_resumes_at_the_first_row_without_a_decision(tmp_path):
    log = ReviewLog(tmp_path / "review.jsonl")
    for row, decision in zip(IDS[:3], ("accept", "reject", "accept"), strict=True):
        log.record(row, decision, reviewer="ana")
    log.undo(reviewer="ana")
    again = ReviewLog(tmp_path / "review.jsonl")  # a new session reads the same file
    assert again.pending(IDS) == IDS[2:]
    assert accepted(again, IDS) == ["q0000"]


def test_a_line_cut_short_by_a_kill_is_skipped_and_the_rest_kept(tmp_path):
    log = ReviewLog(tmp_path / "review.jsonl")
    log.record("q0000", "accept", reviewer="ana")
    with open(log.path, "ab") as f:
        f.write(b'{"id": "q0001", "deci')  # the kill landed mid-write
    assert log.decisions() == {"q0000": "accept"}
    log.record("q0002", "reject", reviewer="ana")  # starts a line of its own
    assert log.decisions() == {"q0000": "accept", "q0002": "reject"}
    assert log.pending(IDS[:3]) == ["q0001"]


_APPENDER = """
import sys
from cafe_core.data.review import ReviewLog
log = ReviewLog(sys.argv[1])
for i in range(200):
    log.record(f"{sys.argv[2]}{i:03d}", "accept", reviewer=sys.argv[2], seconds=1.0)
"""


def test_two_reviewers_appending_at_once_lose_no_decision(tmp_path):
    path = tmp_path / "review.jsonl"
    procs = [subprocess.Popen([sys.executable, "-c", _APPENDER, str(path), who]) for who in ("a", "b")]
    assert [p.wait() for p in procs] == [0, 0]
    lines = path.read_text().splitlines()
    assert len(lines) == 400 and all(json.loads(line)["decision"] == "accept" for line in lines)
    assert len(ReviewLog(path).decisions()) == 400


def test_the_simulated_annotator_errs_at_its_rate_costs_its_time_and_resumes_unchanged(tmp_path):
    ids = [f"q{i:05d}" for i in range(2000)]
    good = [i % 3 != 0 for i in range(2000)]
    annotator = SimulatedAnnotator(error_rate=0.1, seconds_per_decision=4.0, seed=7)
    whole = ReviewLog(tmp_path / "whole.jsonl")
    assert annotator.review(whole, ids, good) == 2000
    decided = whole.decisions()
    errors = sum((decided[i] == "accept") != g for i, g in zip(ids, good, strict=True))
    assert 0.08 < errors / 2000 < 0.12  # 0.1 +- 3 standard errors of 2,000 draws
    assert whole.seconds() == 8000.0

    split = ReviewLog(tmp_path / "split.jsonl")
    assert annotator.review(split, ids, good, budget_s=3000.0) == 750  # stopped by its budget
    assert annotator.review(split, ids, good) == 1250  # resumed
    assert split.decisions() == decided
    assert {e["reviewer"] for e in split.events()} == {"simulated"}
    with pytest.raises(ValueError, match="error_rate"):
        SimulatedAnnotator(error_rate=1.5)
