"""Human filtering (paper 3.2): reviewers' decisions on teacher targets, kept in an append-only log.

The paper's workers saw the subject photo, the instruction and the generated image, and rejected
targets that lost the identity or ignored the instruction. A review here is a JSON Lines file of
events, one line each, appended with a single ``write`` on a file opened ``O_APPEND`` and flushed
to disk before the call returns:

    {"id": "q0042", "decision": "accept", "reviewer": "ana", "seconds": 3.1, "time": 1764862800.0}
    {"undo": "q0042", "reviewer": "ana", "time": 1764862803.5}

Replaying the events gives each row's standing decision (:meth:`ReviewLog.decisions`); an undo
withdraws the row's latest decision. A review stopped anywhere resumes at the first row without
one (:meth:`ReviewLog.pending`), and loses at most a line the kill cut short, which the reader
skips. The pipeline reads the same file.

For CAFE-mini's table 3, :class:`SimulatedAnnotator` stands in for the workers: it knows what
each target really shows, errs at a set rate and costs a set number of seconds per decision. Its
figures are labelled "simulated" wherever they appear.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DECISIONS", "ReviewLog", "SimulatedAnnotator", "accepted"]

logger = logging.getLogger(__name__)

DECISIONS = ("accept", "reject")
_BATCH = 256
"""Decisions a machine reviewer writes at once."""


class ReviewLog:
    """The decisions file of one review: append events, replay them."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _append(self, *events: dict) -> None:
        line = "".join(json.dumps(event, sort_keys=True) + "\n" for event in events).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            # Writers take turns: another's append may have grown the file before its bytes land,
            # and the last-byte check below must not read that gap.
            fcntl.flock(fd, fcntl.LOCK_EX)
            end = os.lseek(fd, 0, os.SEEK_END)
            if end and os.pread(fd, 1, end - 1) != b"\n":
                line = b"\n" + line  # a kill cut the last line short: start on a line of our own
            os.write(fd, line)  # one write: its lines land together, after every earlier line
            os.fsync(fd)
        finally:
            os.close(fd)

    def record(self, row_id: str, decision: str, *, reviewer: str, seconds: float | None = None) -> None:
        """Append ``decision`` ("accept" or "reject") on row ``row_id``; a later one replaces it."""
        self.record_many([(row_id, decision)], reviewer=reviewer, seconds=seconds)

    def record_many(self, decisions: Sequence[tuple[str, str]], *, reviewer: str, seconds: float | None = None) -> None:
        """Append several ``(row_id, decision)`` in one write (a machine reviewer's batch)."""
        events = []
        for row_id, decision in decisions:
            if decision not in DECISIONS:
                raise ValueError(f"decision must be one of {DECISIONS}, got {decision!r}")
            event = {"id": str(row_id), "decision": decision, "reviewer": reviewer, "time": time.time()}
            if seconds is not None:
                event["seconds"] = float(seconds)
            events.append(event)
        if events:
            self._append(*events)

    def undo(self, *, reviewer: str) -> str | None:
        """Withdraw the latest standing decision; returns its row id (None: nothing to undo)."""
        order = self._standing_order()
        if not order:
            return None
        self._append({"undo": order[-1], "reviewer": reviewer, "time": time.time()})
        return order[-1]

    def events(self) -> list[dict]:
        """Every complete event in the file, in order (a last line cut short by a kill is skipped)."""
        if not self.path.is_file():
            return []
        out = []
        for number, line in enumerate(self.path.read_bytes().split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("%s:%d is not a complete event (a write cut short?); skipped", self.path, number)
        return out

    def _replay(self) -> tuple[dict[str, list[dict]], list[str]]:
        """Each row's stack of decisions, and the rows in the order of their standing decisions."""
        stacks: dict[str, list[dict]] = {}
        order: list[str] = []
        for event in self.events():
            if "undo" in event:
                row = event["undo"]
                if stacks.get(row):
                    stacks[row].pop()
                    del order[len(order) - 1 - order[::-1].index(row)]  # its latest place
            else:
                stacks.setdefault(event["id"], []).append(event)
                order.append(event["id"])
        return stacks, order

    def _standing_order(self) -> list[str]:
        return self._replay()[1]

    def decisions(self) -> dict[str, str]:
        """Row id -> its standing decision ("accept" or "reject"); rows without one are absent."""
        stacks, _ = self._replay()
        return {row: stack[-1]["decision"] for row, stack in stacks.items() if stack}

    def pending(self, ids: Sequence[str]) -> list[str]:
        """The ids among ``ids`` without a standing decision, in their order: where a review resumes."""
        decided = self.decisions()
        return [i for i in ids if i not in decided]

    def seconds(self) -> float:
        """The reviewing time the log records (the sum of every decision's ``seconds``, undone ones too)."""
        return float(sum(e.get("seconds", 0.0) for e in self.events() if "decision" in e))


@dataclass(frozen=True)
class SimulatedAnnotator:
    """A reviewer who knows the truth, errs with probability ``error_rate`` and takes
    ``seconds_per_decision`` per row: the stand-in for the paper's workers in CAFE-mini."""

    error_rate: float = 0.05
    seconds_per_decision: float = 5.0
    seed: int = 0
    name: str = "simulated"

    def __post_init__(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"error_rate must lie in [0, 1], got {self.error_rate}")
        if self.seconds_per_decision < 0:
            raise ValueError(f"seconds_per_decision must be >= 0, got {self.seconds_per_decision}")

    def review(self, log: ReviewLog, ids: Sequence[str], good: Sequence[bool], budget_s: float | None = None) -> int:
        """Decide every pending row of ``ids`` (``good``: the truth, aligned with ``ids``) into ``log``,
        stopping when the log's recorded seconds would pass ``budget_s``; returns the rows decided.

        Each row's error is drawn from (seed, row id), so a resumed review decides as an unbroken one.
        """
        truth = dict(zip(ids, good, strict=True))
        spent, batch = log.seconds(), []
        for row in log.pending(ids):
            if budget_s is not None and spent + self.seconds_per_decision > budget_s:
                break
            wrong = _row_draw(self.seed, row) < self.error_rate
            batch.append((row, "accept" if bool(truth[row]) != wrong else "reject"))
            spent += self.seconds_per_decision
        for start in range(0, len(batch), _BATCH):  # a kill loses at most the batch being written
            log.record_many(batch[start : start + _BATCH], reviewer=self.name, seconds=self.seconds_per_decision)
        return len(batch)


def _row_draw(seed: int, row_id: str) -> float:
    """A uniform draw in [0, 1) fixed by ``seed`` and the row's id."""
    digest = int.from_bytes(hashlib.sha256(row_id.encode()).digest()[:8], "little")
    return float(np.random.default_rng([seed, digest]).random())


def accepted(log: ReviewLog, ids: Iterable[str]) -> list[str]:
    """The ids among ``ids`` a reviewer accepted, in their order."""
    decided = log.decisions()
    return [i for i in ids if decided.get(i) == "accept"]
