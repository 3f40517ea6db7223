"""Objects: eight shapes with a colour and a pattern, and their accessories.

The objects (body coordinates u, v in [-1, 1], v pointing down).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..records import Subject
from .canvas import (
    _BODY_RGB,
    _C,
    _PATTERN_RGB,
    _ellipse,
    _Grid,
    _paint,
    _rainbow,
    _rect,
    _triangle,
)


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    turn = (np.arctan2(u, -v) * (5.0 / (2.0 * np.pi))) % 1.0
    return u * u + v * v < (0.45 + 0.55 * np.abs(turn - 0.5) * 2.0) ** 2


def _cup(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    half_width = 0.72 - 0.2 * (v + 0.75) / 1.55
    body = (np.abs(u + 0.15) < half_width) & (v > -0.75) & (v < 0.8)
    r2 = (u - 0.5) ** 2 + v**2
    return body | ((r2 < 0.38**2) & (r2 > 0.2**2) & (u > 0.5))


def _tower(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    battlements = (np.floor((u + 0.45) / 0.18) % 2 == 0) & (v > -1.0)
    return (np.abs(u) < 0.45) & ((v > -0.75) | battlements) & (v < 1.0)


def _cube_faces(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Front, top and side faces of a cube seen slightly from above and the right."""
    front = _rect(u, v, -0.82, 0.52, -0.5, 0.9)
    rise = -0.5 - v  # how far above the front face's top edge
    top = (rise >= 0.0) & (rise <= 0.36) & (u >= -0.82 + rise) & (u <= 0.52 + rise)
    run = u - 0.52
    side = (run >= 0.0) & (run <= 0.36) & (v <= 0.9 - run) & (v >= -0.5 - run)
    return front, top, side


_SHAPES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "ball": lambda u, v: u * u + v * v < 1.0,
    "box": lambda u, v: (np.abs(u) < 0.85) & (np.abs(v) < 0.85),
    "cone": lambda u, v: _triangle(u, v, (0.0, -1.0), -0.95, 0.95, 0.9),
    "gem": lambda u, v: np.abs(u) / 0.8 + np.abs(v) < 1.0,
    "star": _star,
    "ring": lambda u, v: np.abs(u * u + v * v - 0.6) < 0.4,
    "cup": _cup,
    "tower": _tower,
}


def _pattern_mask(pattern: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if pattern == "stripes":
        return np.floor((v + 4.0) * 2.2) % 2 == 1
    if pattern == "dots":
        return ((u + 4.0) % 0.7 - 0.35) ** 2 + ((v + 4.0) % 0.7 - 0.35) ** 2 < 0.21**2
    return (np.floor((u + 4.0) / 0.55) + np.floor((v + 4.0) / 0.55)) % 2 == 0


def _object_hat(canvas: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    _paint(canvas, _ellipse(u, v, 0.0, -1.02, 0.46, 0.4) & (v < -1.02), _C["red"])
    _paint(canvas, _rect(u, v, -0.78, 0.78, -1.08, -0.92), _C["red"] * 0.8)


def _object_glasses(canvas: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    for cu in (-0.38, 0.38):
        r2 = (u - cu) ** 2 + (v + 0.25) ** 2
        _paint(canvas, r2 < 0.18**2, _C["pink"], alpha=0.45)
        _paint(canvas, (r2 < 0.31**2) & (r2 >= 0.18**2), _C["pink"])
    _paint(canvas, _rect(u, v, -0.1, 0.1, -0.3, -0.2), _C["pink"])


def _object_scarf(canvas: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    _rainbow(canvas, _rect(u, v, -1.0, 1.0, 0.02, 0.42) | _rect(u, v, 0.25, 0.55, 0.42, 1.0), u, v)


_OBJECT_ACCESSORIES: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], None]] = {
    "red_hat": _object_hat,
    "pink_glasses": _object_glasses,
    "rainbow_scarf": _object_scarf,
}


def _draw_object(
    canvas: np.ndarray, g: _Grid, subject: Subject, ctx: str, rng: np.random.Generator
) -> tuple[float, float, float, float]:
    """Draw an object subject onto the canvas; returns its box in [0, 1] image units."""
    cx, cy = 0.5 + rng.uniform(-0.1, 0.1), 0.56 + rng.uniform(-0.07, 0.07)
    s = 0.27 * rng.uniform(0.88, 1.12)
    u, v = (g.x - cx) / s, (g.y - cy) / s
    colour = _BODY_RGB[ctx] if ctx in ("red", "purple") else _BODY_RGB[subject.attr("colour")]
    pattern_rgb = _PATTERN_RGB.get(subject.attr("pattern_colour"))
    if ctx == "wet":  # soaked surfaces look darker and bluer
        colour = colour * 0.62 + _C["wet_tint"]
        if pattern_rgb is not None:
            pattern_rgb = pattern_rgb * 0.62 + _C["wet_tint"]

    if ctx != "water":
        _paint(canvas, _ellipse(g.x, g.y, cx, cy + 0.93 * s, 0.9 * s, 0.2 * s), canvas * 0.7)  # shadow
    shade = 1.0 - (0.22 if ctx == "shiny" else 0.09) * (u + v)
    if ctx == "cube_shaped":
        front, top, side = _cube_faces(u, v)
        body = front | top | side
        shade = np.where(top, np.float32(1.25), np.where(side, np.float32(0.7), np.float32(1.0))) * shade
    else:
        body = _SHAPES[subject.cls](u, v)
    _paint(canvas, body, colour * shade)
    if pattern_rgb is not None:
        _paint(canvas, body & _pattern_mask(subject.attr("pattern"), u, v), pattern_rgb * shade)

    if ctx == "shiny":
        _paint(canvas, body & _ellipse(u, v, -0.35, -0.42, 0.3, 0.22), _C["white"], alpha=0.85)
    elif ctx == "wet":
        for cu, cv in rng.uniform(-0.65, 0.65, (7, 2)):
            _paint(canvas, body & _ellipse(u, v, cu, cv, 0.11, 0.14), _C["droplet"], alpha=0.85)
    elif ctx in _OBJECT_ACCESSORIES:
        _OBJECT_ACCESSORIES[ctx](canvas, u, v)
    return cx - s, cy - s, cx + s, cy + s
