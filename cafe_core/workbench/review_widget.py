"""Human filtering in JupyterLab: a review of a dataset's targets, one row at a time (paper 3.2).

:class:`ReviewSession` holds what the widget shows and does, so it is tested without a browser:
the first row without a decision, its photo, instruction, target and scores; accept, reject,
undo; the count. Every decision goes straight to the :class:`~cafe_core.data.review.ReviewLog`
(appended and flushed), so closing the notebook, a kernel restart or a crash loses nothing and
the next session opens at the first undecided row. :func:`review_widget` lays it out with
ipywidgets; ipyevents brings the key presses (a accept, r reject, u undo).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.dataset import Dataset, open_dataset
from ..data.review import ReviewLog

__all__ = ["KEYS", "ReviewSession", "ReviewWidget", "review_widget"]

KEYS = {"a": "accept", "r": "reject", "u": "undo"}
"""The widget's keys and what each does."""


class ReviewSession:
    """The rows of ``dataset`` to review, in order (all of them, or ``ids``), and the decisions so far."""

    def __init__(
        self,
        dataset: Dataset | str | Path,
        log: ReviewLog | str | Path,
        reviewer: str,
        ids: Sequence[str] | None = None,
    ) -> None:
        if not reviewer.strip():
            raise ValueError("name the reviewer: every decision records who made it")
        self.dataset = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
        self.log = log if isinstance(log, ReviewLog) else ReviewLog(log)
        self.reviewer = reviewer
        all_ids = self.dataset.column("id")
        self._position = {row_id: i for i, row_id in enumerate(all_ids)}
        self.ids = list(ids) if ids is not None else all_ids
        unknown = [i for i in self.ids if i not in self._position]
        if unknown:
            raise KeyError(f"{len(unknown)} ids are not in {self.dataset.folder}, e.g. {unknown[:3]}")
        self._shown_at = time.monotonic()

    def current(self) -> dict | None:
        """The first row without a standing decision (its cells as stored; images as PNG bytes), or None: done."""
        pending = self.log.pending(self.ids)
        if not pending:
            return None
        self._shown_at = time.monotonic()
        return self.dataset.row(self._position[pending[0]])

    def decide(self, decision: str) -> dict | None:
        """Record ``decision`` ("accept" or "reject") on the current row, with the seconds it was shown;
        returns the next row."""
        row = self.current_id()
        if row is None:
            raise RuntimeError("every row has a decision: nothing to decide")
        self.log.record(row, decision, reviewer=self.reviewer, seconds=time.monotonic() - self._shown_at)
        return self.current()

    def undo(self) -> dict | None:
        """Withdraw the latest decision; returns the row to decide again (the current one)."""
        self.log.undo(reviewer=self.reviewer)
        return self.current()

    def current_id(self) -> str | None:
        pending = self.log.pending(self.ids)
        return pending[0] if pending else None

    def progress(self) -> tuple[int, int]:
        """(rows decided, rows to review)."""
        return len(self.ids) - len(self.log.pending(self.ids)), len(self.ids)


def _scores_html(row: dict) -> str:
    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    def verdict(value: bool | None) -> str:
        return "" if value is None else (" (pass)" if value else " (fail)")

    return (
        f"<b>instruction:</b> {row['instruction']}<br>"
        f"<b>CLIP(y, instruction):</b> {fmt(row.get('clip_score'))}{verdict(row.get('clip_pass'))} &nbsp; "
        f"<b>DINO(x, y):</b> {fmt(row.get('dino_score'))}{verdict(row.get('dino_pass'))}<br>"
        f"<small>{row['id']} · teacher {row['teacher']} · seed {row['seed']}</small>"
    )


@dataclass(eq=False)
class ReviewWidget:
    """What :func:`review_widget` built; a notebook displays ``box`` (the object displays as it)."""

    box: Any
    session: ReviewSession
    buttons: dict[str, Any]
    images: tuple[Any, Any]
    about: Any
    counter: Any
    keys: Any
    """The ipyevents ``Event`` watching key presses on ``box``."""
    on_key: Callable[[dict], None]
    """Its handler: takes ipyevents' event dict (``{"type": "keydown", "key": "a"}``)."""

    def _repr_mimebundle_(self, **kwargs: Any):
        return self.box._repr_mimebundle_(**kwargs)


def review_widget(session: ReviewSession, image_width: int = 256) -> ReviewWidget:
    """The review as ipywidgets: photo and target side by side, the instruction and scores,
    Accept / Reject / Undo (and the keys a, r, u), a counter and a progress bar."""
    import ipywidgets as w
    from ipyevents import Event

    photo = w.Image(format="png", width=image_width)
    target = w.Image(format="png", width=image_width)
    about = w.HTML()
    counter = w.Label()
    bar = w.IntProgress(min=0, max=max(1, len(session.ids)))
    buttons = {
        "accept": w.Button(description="Accept", button_style="success", icon="check"),
        "reject": w.Button(description="Reject", button_style="danger", icon="times"),
        "undo": w.Button(description="Undo", icon="undo"),
    }

    def show(row: dict | None) -> None:
        done, total = session.progress()
        counter.value = f"{done} / {total} decided" + ("" if row is not None else " · review complete")
        bar.value = done
        buttons["accept"].disabled = buttons["reject"].disabled = row is None
        if row is None:
            about.value = "<b>Every row has a decision.</b> The pipeline reads them from " + str(session.log.path)
            return
        photo.value, target.value = row["x"]["bytes"], row["y"]["bytes"]
        about.value = _scores_html(row)

    def act(action: str) -> None:
        if action == "undo":
            show(session.undo())
        elif session.current_id() is not None:
            show(session.decide(action))

    def on_key(event: dict) -> None:
        """ipyevents' keydown: a accepts, r rejects, u undoes (other keys do nothing)."""
        action = KEYS.get(str(event.get("key", "")).lower())
        if event.get("type") == "keydown" and action is not None:
            act(action)

    for action, button in buttons.items():
        button.on_click(lambda _, action=action: act(action))
    labelled = [w.VBox([w.Label("photo x"), photo]), w.VBox([w.Label("target y"), target])]
    hint = w.HTML("<small>keys (click the images first): <b>a</b> accept · <b>r</b> reject · <b>u</b> undo</small>")
    box = w.VBox([w.HBox(labelled), about, w.HBox([*buttons.values(), hint]), w.HBox([counter, bar])])
    keys = Event(source=box, watched_events=["keydown"], prevent_default_action=True)
    keys.on_dom_event(on_key)
    show(session.current())
    return ReviewWidget(box, session, buttons, (photo, target), about, counter, keys, on_key)
