"""Jobs side by side (cafe_core.workbench.processes): what a stage's training seeds rely on when they
train at once: each its own process and threads, errors and Ctrl-C carried back, runs nested in the stage's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cafe_core.workbench import tracking
from cafe_core.workbench.processes import groups, side_by_side


def _where(label: str) -> tuple[str, int, int]:
    import torch

    return label, os.getpid(), torch.get_num_threads()


def _fail_or_finish(path: str, fail: bool) -> str:
    if fail:
        raise ValueError("seed 1 diverged")
    time.sleep(1.0)
    Path(path).write_text("done")
    return path


def _exit_at_once() -> None:
    os._exit(3)


def _wait_for_a_signal(path: str) -> None:
    Path(path + ".pid").write_text(str(os.getpid()))
    try:
        time.sleep(120)
    except KeyboardInterrupt:
        Path(path).write_text("interrupted")
        raise


def _log_a_seed(root: str, seed: int) -> int:
    with tracking.start_run(f"seed-{seed}", root=root):
        tracking.log_metrics({"loss": float(seed)})
    tracking.record_work(built=True)  # what build_once records once the seed's folder is published
    return seed


def test_groups_split_the_threads_and_run_the_rest_on_all_of_them():
    assert groups(3, 2, 2) == [([0, 1], 1), ([2], 2)]  # three seeds on two cores
    assert groups(4, 2, 2) == [([0, 1], 1), ([2, 3], 1)]
    assert groups(3, 3, 2) == [([0, 1, 2], 1)]  # more processes than threads: one thread each
    assert groups(2, 2, 16) == [([0, 1], 8)]
    assert groups(0, 2, 2) == []
    with pytest.raises(ValueError, match="processes >= 1"):
        groups(2, 0, 2)


@pytest.mark.slow  # spawns processes: seconds each
def test_jobs_run_in_processes_of_their_own_on_their_share_of_the_threads():
    import torch

    mine = torch.get_num_threads()
    out = side_by_side(_where, [("a",), ("b",), ("c",)], processes=2, threads=2)
    assert [label for label, _, _ in out] == ["a", "b", "c"]  # in job order
    (_, pid_a, threads_a), (_, pid_b, threads_b), (_, pid_c, threads_c) = out
    assert len({pid_a, pid_b, os.getpid()}) == 3 and (threads_a, threads_b) == (1, 1)
    assert (pid_c, threads_c) == (os.getpid(), 2)  # the one left over: here, on both threads
    assert torch.get_num_threads() == mine
    in_turn = side_by_side(_where, [("a",), ("b",)], processes=1)
    assert {pid for _, pid, _ in in_turn} == {os.getpid()}


@pytest.mark.slow  # spawns processes: seconds each
def test_a_failing_job_is_raised_here_after_the_job_beside_it_finishes(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    with pytest.raises(ValueError, match="seed 1 diverged") as raised:
        side_by_side(_fail_or_finish, [(a, True), (b, False)], processes=2, threads=2)
    assert "raised in a worker process" in "".join(raised.value.__notes__)
    assert Path(b).read_text() == "done"  # its work is kept
    with pytest.raises(ChildProcessError, match="exited with code 3"):
        side_by_side(_exit_at_once, [(), ()], processes=2, threads=2)


@pytest.mark.slow  # spawns processes: seconds each
@pytest.mark.parametrize("how", ["Ctrl-C", "killed"])
def test_workers_stop_with_the_process_that_started_them(tmp_path, how):
    """Ctrl-C (or the runner's SIGTERM, which it turns into Ctrl-C) stops each worker with SIGINT;
    a parent killed outright (SIGKILL) leaves no worker training: Linux sends each one SIGINT."""
    if how == "killed" and not sys.platform.startswith("linux"):
        pytest.skip("the parent-death signal is Linux's")
    files = [str(tmp_path / "a"), str(tmp_path / "b")]
    script = textwrap.dedent(f"""
        import sys
        sys.path[:0] = {sys.path!r}
        from cafe_core.workbench.processes import side_by_side
        from test_processes import _wait_for_a_signal
        side_by_side(_wait_for_a_signal, [({files[0]!r},), ({files[1]!r},)], processes=2, threads=2)
    """)
    parent = subprocess.Popen(  # Ctrl-C raises KeyboardInterrupt there, even where this process ignores SIGINT
        [sys.executable, "-c", script],
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler),
    )
    deadline = time.monotonic() + 120
    while not all(Path(f + ".pid").is_file() for f in files):
        assert time.monotonic() < deadline and parent.poll() is None, "the workers did not start"
        time.sleep(0.2)
    parent.send_signal(signal.SIGINT if how == "Ctrl-C" else signal.SIGKILL)
    parent.wait(timeout=60)
    assert parent.returncode != 0
    deadline = time.monotonic() + 60
    while not all(Path(f).is_file() for f in files):
        assert time.monotonic() < deadline, "a worker did not stop"
        time.sleep(0.2)
    assert [Path(f).read_text() for f in files] == ["interrupted", "interrupted"]


@pytest.mark.slow  # spawns processes: seconds each
def test_workers_runs_nest_in_the_stage_run_which_counts_their_work(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv(tracking.RUN_ENV, raising=False)
    with tracking.start_run("train_generator@main", root=tmp_path) as stage:
        assert side_by_side(_log_a_seed, [(str(tmp_path), 0), (str(tmp_path), 1)], processes=2, threads=2) == [0, 1]
    client = MlflowClient(uri)
    stage_run = client.get_run(stage.info.run_id)
    assert stage_run.info.status == "FINISHED"
    assert stage_run.data.tags["cafe.built"] == "2"  # both seeds' work, counted on the stage's run
    seeds = client.search_runs(
        [stage.info.experiment_id], f"tags.`mlflow.parentRunId` = '{stage.info.run_id}'", order_by=["run_name"]
    )
    assert [r.info.run_name for r in seeds] == ["seed-0", "seed-1"]
    assert [r.data.metrics["loss"] for r in seeds] == [0.0, 1.0]
    assert {r.info.status for r in seeds} == {"FINISHED"}
    assert {r.data.tags["cafe.role"] for r in seeds} == {"nested"}
