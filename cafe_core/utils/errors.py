"""Errors that name the argument at fault, so every front end (the call, the CLI, a widget) can say
it in its own words: the CLI as its flag (``--blend``), the call as its keyword (``reference_weights``)."""

from __future__ import annotations

from numbers import Integral

__all__ = ["ArgumentError", "check_count"]


class ArgumentError(ValueError):
    """A bad value of the argument ``name``; ``problem`` says what is wrong, after the name."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name} {problem}")
        self.name, self.problem = name, problem


def check_count(name: str, value) -> int:
    """``value`` as an int if it is a whole number >= 1 (steps, images ...), else an :class:`ArgumentError`."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ArgumentError(name, f"must be an integer >= 1, got {value!r}")
    return int(value)
