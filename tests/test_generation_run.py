"""A dataset made on several processes, killed and restarted (cafe_core.workbench.generation_run)."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cafe_core.data.dataset import open_dataset
from cafe_core.workbench.generation_run import generate_dataset, merge_parts, owner
from cafe_core.workbench.launch import cpu_launch

# The workload: a row per request whose pixels come from its id; `pause` seconds per batch.
SCRIPT = textwrap.dedent(
    """
    import sys, time
    from dataclasses import dataclass
    sys.path.insert(0, {tests!r})
    from test_dataset_format import _row
    from cafe_core.workbench.generation_run import generate_dataset

    @dataclass
    class Request:
        id: str

    def make_rows(batch):
        time.sleep({pause})
        return [_row(int(r.id[1:])) for r in batch]

    accelerator = None
    if {accelerate}:
        from accelerate import Accelerator
        accelerator = Accelerator(cpu=True)
    requests = [Request(f"q{{i:04d}}") for i in range({n})]
    generate_dataset(requests, make_rows, {folder!r}, info={{"run": "test"}}, batch_size=2,
                     rows_per_shard=2, accelerator=accelerator)
    """
)


def _script(tmp_path: Path, folder: Path, n: int, pause: float, accelerate: bool) -> Path:
    path = tmp_path / f"make-{pause}-{accelerate}.py"
    path.write_text(
        SCRIPT.format(tests=os.path.dirname(__file__), folder=str(folder), n=n, pause=pause, accelerate=accelerate)
    )
    return path


def _ids(n: int) -> list[str]:
    return [f"q{i:04d}" for i in range(n)]


def test_one_process_makes_every_row_once_and_a_rerun_makes_none(tmp_path):
    from dataclasses import dataclass

    from test_dataset_format import _row

    @dataclass
    class Request:
        id: str

    made = []

    def make_rows(batch):
        made.extend(r.id for r in batch)
        return [_row(int(r.id[1:])) for r in batch]

    requests = [Request(i) for i in _ids(9)]
    dataset = generate_dataset(requests, make_rows, tmp_path / "d", batch_size=4, rows_per_shard=3)
    assert sorted(dataset.column("id")) == _ids(9) and len(made) == 9
    again = generate_dataset(requests, make_rows, tmp_path / "d", batch_size=4)
    assert len(again) == 9 and len(made) == 9  # nothing made twice
    with pytest.raises(ValueError, match="one row per request"):
        generate_dataset([Request("q0100")], lambda batch: [], tmp_path / "e")
    with pytest.raises(ValueError, match="unique"):
        generate_dataset([Request("a"), Request("a")], make_rows, tmp_path / "f")


@pytest.mark.slow
def test_two_processes_share_the_rows_and_one_manifest_lists_them(tmp_path):
    folder = tmp_path / "d"
    script = _script(tmp_path, folder, n=20, pause=0, accelerate=True)
    cmd, env = cpu_launch(2, [str(script)])
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    parts = sorted(p.name for p in (folder / "parts").iterdir())
    assert parts == ["rank-00000", "rank-00001"]
    for rank, part in enumerate(parts):  # each process made exactly the rows it owns
        ids = open_dataset(folder / "parts" / part).column("id")
        assert sorted(ids) == [i for i in _ids(20) if owner(i, 2) == rank]
    assert sorted(open_dataset(folder).column("id")) == _ids(20)


def test_a_run_killed_and_started_again_loses_and_duplicates_nothing(tmp_path):
    folder, n = tmp_path / "d", 40
    proc = subprocess.Popen([sys.executable, str(_script(tmp_path, folder, n, pause=0.05, accelerate=False))])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (folder / "parts/rank-00000/shard-00002.parquet").exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (folder / "manifest.json").exists()  # killed before the merge
    part = len(open_dataset(folder / "parts/rank-00000"))
    assert 0 < part < n
    subprocess.run([sys.executable, str(_script(tmp_path, folder, n, pause=0, accelerate=False))], check=True)
    assert sorted(open_dataset(folder).column("id")) == _ids(n)


def test_merging_refuses_parts_that_share_a_row(tmp_path):
    from test_dataset_format import _row

    from cafe_core.data.dataset import DatasetWriter

    for part in ("rank-00000", "rank-00001"):
        with DatasetWriter(tmp_path / "parts" / part) as writer:
            writer.add(_row(0))
    with pytest.raises(ValueError, match="repeats ids"):
        merge_parts(tmp_path)
