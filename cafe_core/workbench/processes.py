"""Independent jobs side by side on one machine: a spawned process each, the threads split among them.

Why: a stage's training seeds are independent jobs, and on a CPU two one-thread processes train
two Gs faster than one two-thread process trains them in turn (1.23x to 1.51x,
``scripts/benchmark_processes.py``): a step of G is too small to keep two threads busy.

Why by hand: ``concurrent.futures`` (Python 3.11) can neither give a job its own thread count nor
stop a job that is running, and a stage stopped by Ctrl-C or SIGTERM must stop its workers rather
than leave them training beside the next run. Here each job gets a process of its own, started
by ``spawn`` (safe from a Jupyter kernel and after torch has started its threads), which dies
with the process that started it (Linux), and logs its MLflow runs nested in the stage's run.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from . import tracking

__all__ = ["groups", "side_by_side"]

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def groups(jobs: int, processes: int, threads: int) -> list[tuple[list[int], int]]:
    """How ``jobs`` jobs share ``threads`` threads at most ``processes`` at a time.

    Returns ``[(job indices, threads per job), ...]`` in order: full groups of ``processes``
    jobs, each job on ``threads // processes`` threads (at least one), then the jobs left over on
    the threads split among them (three seeds on two cores, two at a time: two side by side on one
    thread each, then the third on both; three at a time: all three on one thread each).
    """
    if jobs < 0 or processes < 1 or threads < 1:
        raise ValueError(f"need jobs >= 0, processes >= 1 and threads >= 1, got {jobs}, {processes}, {threads}")
    starts = range(0, jobs, processes)
    return [
        (members, max(1, threads // len(members)))
        for members in (list(range(start, min(start + processes, jobs))) for start in starts)
    ]


def side_by_side(
    task: Callable[..., Any], jobs: Sequence[tuple], *, processes: int, threads: int | None = None
) -> list[Any]:
    """``[task(*job) for job in jobs]``, up to ``processes`` jobs at a time, each in its own process.

    ``task`` must be importable (a module's top-level function) and its arguments and result
    picklable. ``threads``: torch threads to share (default: this process's). With one process
    or one job everything runs here, in order, as a plain loop. A job that raises lets the jobs
    beside it finish (their work is kept), then its exception is raised here with the worker's
    traceback attached; a worker that dies without an answer (killed, out of memory) raises
    ``ChildProcessError``. Ctrl-C (or the SIGTERM that the notebook runner turns into it) stops
    every worker with SIGINT, so each closes its MLflow run as a stage's own code would.
    """
    import torch

    jobs = list(jobs)
    threads = threads or torch.get_num_threads()
    if processes <= 1 or len(jobs) <= 1:
        return [task(*job) for job in jobs]
    results: list[Any] = [None] * len(jobs)
    for members, each in groups(len(jobs), processes, threads):
        if len(members) == 1:  # the one left over runs here, on every thread
            results[members[0]] = _here(task, jobs[members[0]], each)
            continue
        logger.info("running %d jobs side by side, %d thread(s) each", len(members), each)
        for i, result in zip(members, _run_group(task, [jobs[i] for i in members], each), strict=True):
            results[i] = result
    return results


def _here(task: Callable[..., Any], job: tuple, threads: int) -> Any:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return task(*job)
    finally:
        torch.set_num_threads(before)


def _run_group(task: Callable[..., Any], jobs: list[tuple], threads: int) -> list[Any]:
    context = multiprocessing.get_context("spawn")
    parent_run = tracking.active_run_id()
    level = logging.getLogger().getEffectiveLevel()
    workers = []
    try:
        for job in jobs:
            receive, send = context.Pipe(duplex=False)
            worker = context.Process(
                target=_worker, args=(send, task, job, threads, parent_run, os.getpid(), level), daemon=False
            )
            worker.start()
            send.close()  # the worker holds the only writing end: its death reads as EOF here
            workers.append((worker, receive))
        answers = []
        for (worker, receive), job in zip(workers, jobs, strict=True):
            try:
                answers.append(receive.recv())
            except EOFError:
                answers.append(("died", job, worker))
            worker.join()
    except BaseException:  # KeyboardInterrupt above all: the workers stop with us
        _stop(worker for worker, _ in workers)
        raise
    results = []
    for answer in answers:
        if answer[0] == "died":
            _, job, worker = answer
            raise ChildProcessError(f"the worker of job {job!r} exited with code {worker.exitcode} and no answer")
        if answer[0] == "error":
            _, error, text = answer
            error.add_note(f"raised in a worker process:\n{text}")
            raise error
        _, result, work = answer
        for built in work:  # the worker's units of work, counted on the stage's run
            tracking.record_work(built)
        results.append(result)
    return results


def _stop(workers) -> None:
    """SIGINT each live worker (KeyboardInterrupt: its runs close KILLED), then terminate stragglers."""
    workers = [w for w in workers if w.is_alive()]
    for worker in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGINT)
    for worker in workers:
        worker.join(timeout=30)
        if worker.is_alive():
            worker.terminate()
            worker.join()


def _worker(send, task, job: tuple, threads: int, parent_run: str | None, parent_pid: int, level: int) -> None:
    """One job in a spawned process: ``threads`` torch threads, runs nested in ``parent_run``."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # how it is stopped, even if its parent ignores SIGINT
    _die_with_parent(parent_pid)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s [worker] %(message)s")
    import torch

    torch.set_num_threads(threads)
    try:
        with tracking.nested_under(parent_run) as work:
            answer = ("ok", task(*job), work)
    except BaseException as error:  # noqa: BLE001 - every failure goes back to the parent
        text = traceback.format_exc()
        try:
            send.send(("error", error, text))
        except Exception:  # an exception that does not pickle: its text does
            send.send(("error", RuntimeError(f"{type(error).__name__}: {error}"), text))
        return
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    send.send(answer)


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux for SIGINT when the parent exits, so an orphaned worker stops (elsewhere: a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGINT), 0, 0, 0)
    if os.getppid() != parent_pid:  # it died before the request took effect
        raise KeyboardInterrupt
