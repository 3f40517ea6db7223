"""The dataset format (cafe_core.data.dataset): sharded Parquet with a manifest, resumable writes."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cafe_core.data.dataset import DatasetWriter, decode_image, open_dataset


def _row(i: int, **extra) -> dict:
    rng = np.random.default_rng(i)
    return {
        "id": f"q{i:04d}",
        "x": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
        "instruction": f"a ball in context {i}",
        "y": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
        "teacher": "world",
        "teacher_version": "test",
        "seed": i,
        **extra,
    }


def test_rows_come_back_in_order_with_their_images_texts_and_scores(tmp_path):
    chat = [{"role": "user", "content": "put it on the beach"}]
    with DatasetWriter(tmp_path / "d", rows_per_shard=2, info={"source": "test"}) as writer:
        for i in range(5):
            writer.add(_row(i, messages=chat, response="Here it is.", clip_score=0.25 + i, dino_pass=i % 2 == 0))
    ds = open_dataset(tmp_path / "d")
    assert len(ds) == 5 and len(ds.shards) == 3 and ds.info == {"source": "test"}
    assert ds.column("id") == [f"q{i:04d}" for i in range(5)]
    assert ds.column("clip_score") == pytest.approx([0.25 + i for i in range(5)])
    assert ds.column("dino_pass") == [True, False, True, False, True]
    assert ds.column("review") == [None] * 5  # optional columns not given are null
    rows = list(ds.rows())
    for i, row in enumerate(rows):
        np.testing.assert_array_equal(decode_image(row["x"]), _row(i)["x"])  # PNG is lossless
        np.testing.assert_array_equal(decode_image(row["y"]), _row(i)["y"])
        assert row["messages"] == chat and row["instruction"] == f"a ball in context {i}"
    assert [len(b) for b in ds.iter_batches(batch_size=2, columns=["id"])] == [2, 2, 1]


def test_bad_rows_and_folders_are_refused_with_the_reason(tmp_path):
    writer = DatasetWriter(tmp_path / "d", info={"source": "a"})
    with pytest.raises(ValueError, match=r"lacks the required column\(s\) \['y'\]"):
        writer.add({k: v for k, v in _row(0).items() if k != "y"})
    with pytest.raises(KeyError, match="no such column"):
        writer.add(_row(0, colour="red"))
    with pytest.raises(ValueError, match=r"uint8 \(H, W, 3\)"):
        writer.add(_row(0, x=np.zeros((8, 8), np.float32)))
    writer.add(_row(0))
    with pytest.raises(ValueError, match="already in"):
        writer.add(_row(0))
    writer.close()
    with pytest.raises(ValueError, match="was written with info"):
        DatasetWriter(tmp_path / "d", info={"source": "b"})
    with pytest.raises(KeyError, match="no such column"):
        open_dataset(tmp_path / "d").column("colour")
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        open_dataset(tmp_path)
    manifest = json.loads((tmp_path / "d/manifest.json").read_text())
    manifest["format"]["version"] += 1
    (tmp_path / "d/manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="this code reads up to"):
        open_dataset(tmp_path / "d")


def test_a_shard_the_manifest_does_not_list_is_dropped_and_its_rows_made_again(tmp_path):
    with DatasetWriter(tmp_path / "d", rows_per_shard=2) as writer:
        writer.add_many(_row(i) for i in range(4))
    manifest = json.loads((tmp_path / "d/manifest.json").read_text())
    manifest["shards"].pop()  # the kill came between the last shard's rename and the manifest
    manifest["rows"] = 2
    (tmp_path / "d/manifest.json").write_text(json.dumps(manifest))
    writer = DatasetWriter(tmp_path / "d", rows_per_shard=2)
    assert writer.written_ids() == {"q0000", "q0001"}
    assert not (tmp_path / "d/shard-00001.parquet").exists()
    writer.add_many(_row(i) for i in range(4) if f"q{i:04d}" not in writer.written_ids())
    assert open_dataset(writer.folder).column("id") == ["q0000", "q0001", "q0002", "q0003"]


_KILLED_WRITER = """
import sys, time
sys.path.insert(0, {tests!r})
from test_dataset_format import _row
from cafe_core.data.dataset import DatasetWriter

writer = DatasetWriter({folder!r}, rows_per_shard=3)
done = writer.written_ids()
for i in range({n}):
    if f"q{{i:04d}}" not in done:
        writer.add(_row(i))
        time.sleep({pause})
writer.close()
"""


def test_a_writer_killed_and_restarted_loses_and_duplicates_nothing(tmp_path):
    """SIGKILL (no Python clean-up runs) in the middle of writing, then the same run again."""
    folder, n = tmp_path / "d", 40
    script = _KILLED_WRITER.format(tests=os.path.dirname(__file__), folder=str(folder), n=n, pause=0.02)
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (folder / "shard-00002.parquet").exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = len(open_dataset(folder))
    assert 0 < written < n, "the kill should land mid-run"
    again = _KILLED_WRITER.format(tests=os.path.dirname(__file__), folder=str(folder), n=n, pause=0)
    subprocess.run([sys.executable, "-c", again], check=True)
    ids = open_dataset(folder).column("id")
    assert sorted(ids) == [f"q{i:04d}" for i in range(n)]  # every row once


def _scored(tmp_path):
    rows = [
        _row(0, subject_class="ball", context="beach", clip_score=0.4, dino_score=0.7, clip_pass=True, dino_pass=True),
        _row(1, subject_class="ball", context="snow", clip_score=0.1, dino_score=0.8, clip_pass=False, dino_pass=True),
        _row(2, subject_class="cup", context="beach", clip_score=0.5, dino_score=0.2, clip_pass=True, dino_pass=False),
        _row(3, subject_class="cup", context="beach", review="accept", response="Here.", kind="declarative"),
    ]
    with DatasetWriter(tmp_path / "d") as writer:
        writer.add_many(rows)
    return open_dataset(tmp_path / "d")


def test_statistics_count_each_stage_pass_rate_and_balance(tmp_path):
    stats = _scored(tmp_path).statistics()
    assert stats["stages"] == {
        "made": 4,
        "scored": 3,
        "clip_pass": 2,
        "dino_pass": 2,
        "both_pass": 1,
        "review_accepted": 1,
        "kept": 2,  # row 0 passed both tests; row 3 was never scored and a reviewer accepted it
        "with_dialogue": 1,
    }
    assert stats["pass_rate"] == pytest.approx({"clip": 2 / 3, "dino": 2 / 3, "both": 1 / 3})
    assert stats["classes"] == {"ball": 2, "cup": 2} and stats["contexts"] == {"beach": 3, "snow": 1}
    assert stats["review"] == {"unreviewed": 3, "accept": 1}
    assert stats["scores"]["clip_score"]["q50"] == pytest.approx(0.4)


@pytest.mark.slow
def test_the_report_reaches_mlflow_with_its_figure_and_tables(tmp_path):
    import mlflow

    from cafe_core.workbench.dataset_report import log_dataset_report

    with mlflow.start_run() as run:
        log_dataset_report(_scored(tmp_path), "d_auto", thresholds={"clip_score": 0.3, "dino_score": 0.6})
    client = mlflow.MlflowClient()
    assert client.get_run(run.info.run_id).data.metrics["d_auto/both_pass"] == 1.0
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "datasets/d_auto")}
    files = ("statistics.json", "scores.png", "classes.json", "contexts.json")
    assert logged == {f"datasets/d_auto/{f}" for f in files}


def test_one_row_is_read_by_its_position_across_shards(tmp_path):
    with DatasetWriter(tmp_path / "d", rows_per_shard=3) as writer:
        writer.add_many(_row(i) for i in range(7))
    ds = open_dataset(tmp_path / "d")
    for position in (0, 2, 3, 6):
        row = ds.row(position)
        assert row["id"] == f"q{position:04d}"
        np.testing.assert_array_equal(decode_image(row["y"]), _row(position)["y"])
    with pytest.raises(IndexError):
        ds.row(7)
    with DatasetWriter(tmp_path / "one", rows_per_shard=200) as writer:  # one shard, three row groups
        writer.add_many(_row(i) for i in range(130))
    assert open_dataset(tmp_path / "one").row(129)["id"] == "q0129"


def test_training_reads_the_rows_every_decision_keeps(tmp_path):
    """A failed test or a reviewer's reject drops a row; a test not run or a row not reviewed does not."""
    decisions = [
        {"clip_pass": True, "dino_pass": True},
        {"clip_pass": False, "dino_pass": True},
        {"clip_pass": True, "dino_pass": False},
        {},  # a user's row the filter never scored
        {"clip_pass": True, "dino_pass": True, "review": "reject"},
        {"clip_pass": True, "dino_pass": True, "review": "accept"},
    ]
    with DatasetWriter(tmp_path / "d", rows_per_shard=4) as writer:
        for i, extra in enumerate(decisions):
            writer.add(_row(i, **extra))
    ds = open_dataset(tmp_path / "d")
    kept = ds.kept()
    assert kept.tolist() == [True, False, False, True, False, True]
    x = ds.images("x", kept)
    assert x.shape == (3, 8, 8, 3) and x.dtype == np.uint8
    for image, i in zip(x, np.flatnonzero(kept), strict=True):
        np.testing.assert_array_equal(image, _row(int(i))["x"])
    np.testing.assert_array_equal(ds.images("y", [5, 0]), np.stack([_row(5)["y"], _row(0)["y"]]))
    with pytest.raises(KeyError, match="not an image column"):
        ds.images("instruction")


def test_rows_without_ground_truth_are_of_unknown_failure_and_graded_apart(tmp_path):
    """Real quadruplets carry no truth: their failure is unknown, never taken as "none", and the
    filter's precision is judged on the rows whose truth is known only."""
    from cafe_core.data.filter import FilterScores, calibrate_thresholds
    from cafe_core.data.quadruplets import UNKNOWN_FAILURE, read_quadruplets

    with DatasetWriter(tmp_path / "d", info={"source": "test"}) as writer:
        for i in range(4):
            truth = {"failure": "identity_drift"} if i == 0 else {"failure": "none"} if i == 1 else None
            writer.add(_row(i, subject=f"s{i}", context="beach", truth=json.dumps(truth) if truth else None))
    quads = read_quadruplets(tmp_path / "d")
    assert quads.failure_names() == ["identity_drift", "none", "unknown", "unknown"]
    assert quads.failures[2] == UNKNOWN_FAILURE
    scores = FilterScores(
        clip_sim=np.ones(4), dino_sim=np.ones(4), clip_null=np.zeros(8), dino_null=np.zeros(8)
    )  # every row kept
    calibration = calibrate_thresholds(scores, quads.failures)
    assert calibration.precision == pytest.approx(0.5)  # 1 good of the 2 known rows, not 3 of 4
    assert set(calibration.rejection_rates) == {"identity_drift", "none", "unknown"}


def test_image_rows_stream_only_the_row_groups_that_hold_them(tmp_path, monkeypatch):
    """G trains on datasets too large to decode at once (1M targets at 512 px are 786 GB): the chosen
    rows stream a batch at a time, in their order, reading just the row groups that hold them."""
    import pyarrow.parquet as pq

    from cafe_core.data import dataset as dataset_module

    monkeypatch.setattr(dataset_module, "_ROW_GROUP", 4)
    with DatasetWriter(tmp_path / "d", rows_per_shard=8) as writer:
        writer.add_many(_row(i) for i in range(20))  # shards of 8, 8, 4 rows; row groups of 4
    ds = open_dataset(tmp_path / "d")
    reads = []
    read_row_group = pq.ParquetFile.read_row_group
    monkeypatch.setattr(
        pq.ParquetFile, "read_row_group", lambda f, g, **kw: reads.append(g) or read_row_group(f, g, **kw)
    )
    monkeypatch.setattr(pq, "read_table", lambda *a, **kw: pytest.fail("read the whole column"))

    rows = ds.image_rows("y", [17, 9, 10, 1])
    batches = list(rows.batches(3))
    assert [len(b) for b in batches] == [3, 1]
    np.testing.assert_array_equal(np.concatenate(batches), np.stack([_row(i)["y"] for i in (17, 9, 10, 1)]))
    assert len(reads) == 3  # rows 9 and 10 share a row group; the other 2 of the 5 groups are never read
    np.testing.assert_array_equal(rows.subset([3, 0]).decode(), np.stack([_row(1)["y"], _row(17)["y"]]))
    np.testing.assert_array_equal(ds.images("x", [2]), _row(2)["x"][None])
    with pytest.raises(IndexError, match="rows outside"):
        ds.image_rows("x", [20])


def test_image_rows_name_their_content(tmp_path):
    """The feature caches are keyed by what the rows hold: other rows, another column, or a changed
    shard give another digest; reopening the same dataset gives the same one."""
    for name, first in (("a", 0), ("b", 100)):
        with DatasetWriter(tmp_path / name, rows_per_shard=4) as writer:
            writer.add_many(_row(i) for i in range(first, first + 6))
    a, b = open_dataset(tmp_path / "a"), open_dataset(tmp_path / "b")
    digest = a.image_rows("y", [0, 1]).digest()
    assert digest == open_dataset(tmp_path / "a").image_rows("y", np.array([0, 1])).digest()
    others = {
        a.image_rows("y", [0, 2]).digest(),
        a.image_rows("x", [0, 1]).digest(),
        b.image_rows("y", [0, 1]).digest(),
    }
    assert digest not in others and len(others) == 3
