"""The review widget's session and buttons (cafe_core.workbench.review_widget), without a browser."""

import pytest
from test_dataset_format import _row

from cafe_core.data.dataset import DatasetWriter
from cafe_core.data.review import ReviewLog
from cafe_core.workbench.review_widget import ReviewSession, review_widget


@pytest.fixture
def dataset(tmp_path):
    with DatasetWriter(tmp_path / "d", rows_per_shard=2) as writer:
        writer.add_many(_row(i, clip_score=0.3 + i / 10, clip_pass=True) for i in range(3))
    return writer.folder


def test_buttons_decide_undo_and_count_and_every_click_reaches_the_log(dataset, tmp_path):
    box = review_widget(ReviewSession(dataset, tmp_path / "review.jsonl", reviewer="ana"))
    photo, target = box.images
    first = target.value
    assert "a ball in context 0" in box.about.value and box.counter.value == "0 / 3 decided"
    box.buttons["accept"].click()
    assert target.value != first and box.counter.value == "1 / 3 decided"
    box.buttons["reject"].click()
    box.buttons["undo"].click()  # back to the second row
    assert "a ball in context 1" in box.about.value
    box.buttons["reject"].click()
    box.buttons["accept"].click()
    assert box.counter.value.endswith("review complete") and box.buttons["accept"].disabled
    log = ReviewLog(tmp_path / "review.jsonl")
    assert log.decisions() == {"q0000": "accept", "q0001": "reject", "q0002": "accept"}
    assert all(e["reviewer"] == "ana" and e.get("seconds", 0) >= 0 for e in log.events())


def test_a_review_closed_half_way_reopens_at_the_first_undecided_row(dataset, tmp_path):
    session = ReviewSession(dataset, tmp_path / "review.jsonl", reviewer="ana")
    session.decide("accept")
    again = ReviewSession(dataset, tmp_path / "review.jsonl", reviewer="ana")  # a new kernel
    assert again.current()["id"] == "q0001" and again.progress() == (1, 3)
    with pytest.raises(ValueError, match="name the reviewer"):
        ReviewSession(dataset, tmp_path / "review.jsonl", reviewer=" ")
    with pytest.raises(KeyError, match="not in"):
        ReviewSession(dataset, tmp_path / "review.jsonl", reviewer="ana", ids=["nope"])


def test_keys_a_r_u_decide_and_undo_and_other_keys_do_nothing(dataset, tmp_path):
    box = review_widget(ReviewSession(dataset, tmp_path / "review.jsonl", reviewer="ana"))
    for key in ("a", "x", "R", "u", "r"):
        box.on_key({"type": "keydown", "key": key})
    box.on_key({"type": "keyup", "key": "a"})  # only key presses act
    assert ReviewLog(tmp_path / "review.jsonl").decisions() == {"q0000": "accept", "q0001": "reject"}
    assert box.keys.watched_events == ["keydown"] and box.keys.source is box.box
    for _ in range(3):
        box.on_key({"type": "keydown", "key": "a"})  # a key past the last row does nothing
    assert box.counter.value.endswith("review complete")
