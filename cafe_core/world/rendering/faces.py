"""Faces: heads with skin tone, hair, eyes and face shape, and their outfits.

The faces (head coordinates u, v: one unit = head half-size, origin at head centre).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..records import Subject
from .canvas import (
    _C,
    _EYE_RGB,
    _HAIR_RGB,
    _SKIN_RGB,
    _ellipse,
    _Grid,
    _paint,
    _rainbow,
    _rect,
    _triangle,
)


@dataclass(frozen=True)
class _Head:
    u: np.ndarray
    v: np.ndarray
    rx: float
    ry: float
    eye_u: float
    torso: np.ndarray


_FACE_RADII = {"narrow": (0.7, 1.0), "wide": (0.95, 0.9)}
_SHIRTS = {
    "chef_outfit": _C["white"],
    "firefighter_outfit": _C["firecoat"],
    "police_outfit": _C["navy"] * 1.3,
    "yellow_shirt": _C["yellow"],
    "wizard_outfit": _C["purple"],
}
_EYE_V = -0.1


def _brimmed(canvas: np.ndarray, h: _Head, crown: np.ndarray, rgb: np.ndarray, brim_width: float) -> None:
    _paint(canvas, crown, rgb)
    _paint(canvas, _rect(h.u, h.v, -brim_width, brim_width, -h.ry + 0.18, -h.ry + 0.32), rgb * 0.8)


def _face_red_hat(canvas: np.ndarray, h: _Head) -> None:
    crown = _ellipse(h.u, h.v, 0.0, -h.ry + 0.2, h.rx * 0.95, 0.62) & (h.v < -h.ry + 0.25)
    _brimmed(canvas, h, crown, _C["red"], h.rx * 1.3)


def _face_santa_hat(canvas: np.ndarray, h: _Head) -> None:
    base = -h.ry + 0.25
    _paint(canvas, _triangle(h.u, h.v, (0.8, -h.ry - 0.85), -h.rx, h.rx, base), _C["red"])
    _paint(canvas, _rect(h.u, h.v, -h.rx * 1.08, h.rx * 1.08, base - 0.08, base + 0.14), _C["white"])
    _paint(canvas, _ellipse(h.u, h.v, 0.8, -h.ry - 0.85, 0.2, 0.2), _C["white"])


def _face_scarf(canvas: np.ndarray, h: _Head) -> None:
    _rainbow(canvas, _rect(h.u, h.v, -0.8, 0.8, 0.85, 1.25) | _rect(h.u, h.v, 0.2, 0.5, 1.25, 2.1), h.u, h.v)


def _face_top_hat(canvas: np.ndarray, h: _Head) -> None:
    _paint(canvas, _rect(h.u, h.v, -0.52, 0.52, -h.ry - 1.0, -h.ry + 0.2), _C["black"])
    _paint(canvas, _rect(h.u, h.v, -0.52, 0.52, -h.ry - 0.05, -h.ry + 0.06), _C["grey"])
    _paint(canvas, _rect(h.u, h.v, -0.95, 0.95, -h.ry + 0.14, -h.ry + 0.26), _C["black"])
    r2 = (h.u - h.eye_u) ** 2 + (h.v - _EYE_V) ** 2
    _paint(canvas, (r2 < 0.27**2) & (r2 > 0.19**2), _C["gold"])  # monocle and its chain
    _paint(canvas, _rect(h.u, h.v, h.eye_u + 0.2, h.eye_u + 0.26, _EYE_V, 0.7), _C["gold"])


def _face_chef(canvas: np.ndarray, h: _Head) -> None:
    _paint(canvas, _ellipse(h.u, h.v, 0.0, -h.ry - 0.55, 0.8, 0.52), _C["white"])
    _paint(canvas, _rect(h.u, h.v, -0.62, 0.62, -h.ry - 0.3, -h.ry + 0.25), _C["white"] * 0.94)
    buttons = _ellipse(h.u, h.v, 0.25, 1.55, 0.09, 0.09) | _ellipse(h.u, h.v, 0.25, 1.95, 0.09, 0.09)
    _paint(canvas, h.torso & buttons, _C["black"])


def _face_firefighter(canvas: np.ndarray, h: _Head) -> None:
    crown = _ellipse(h.u, h.v, 0.0, -h.ry + 0.15, h.rx * 1.05, 0.62) & (h.v < -h.ry + 0.25)
    _brimmed(canvas, h, crown, _C["red"] * 0.95, h.rx * 1.45)
    reflective = ((h.v > 1.5) & (h.v < 1.68)) | (np.abs(np.abs(h.u) - 0.55) < 0.09)
    _paint(canvas, h.torso & reflective, _C["yellow"])


def _face_police(canvas: np.ndarray, h: _Head) -> None:
    _paint(canvas, _rect(h.u, h.v, -h.rx * 1.1, h.rx * 1.1, -h.ry - 0.3, -h.ry + 0.2), _C["navy"])
    _paint(canvas, _rect(h.u, h.v, -h.rx * 0.95, h.rx * 0.95, -h.ry + 0.2, -h.ry + 0.32), _C["black"])
    badges = _ellipse(h.u, h.v, 0.0, -h.ry - 0.05, 0.12, 0.12) | (h.torso & _ellipse(h.u, h.v, 0.6, 1.6, 0.13, 0.13))
    _paint(canvas, badges, _C["gold"])


def _face_glasses(canvas: np.ndarray, h: _Head) -> None:
    for cu in (-h.eye_u, h.eye_u):
        r2 = (h.u - cu) ** 2 + (h.v - _EYE_V) ** 2
        _paint(canvas, r2 < 0.2**2, _C["pink"], alpha=0.35)
        _paint(canvas, (r2 < 0.29**2) & (r2 >= 0.2**2), _C["pink"])
    _paint(canvas, _rect(h.u, h.v, -h.eye_u + 0.2, h.eye_u - 0.2, _EYE_V - 0.04, _EYE_V + 0.04), _C["pink"])


def _face_wizard(canvas: np.ndarray, h: _Head) -> None:
    base = -h.ry + 0.25
    _paint(canvas, _triangle(h.u, h.v, (0.15, -h.ry - 1.3), -h.rx * 1.05, h.rx * 1.05, base), _C["purple"])
    _paint(canvas, _rect(h.u, h.v, -h.rx * 1.45, h.rx * 1.45, base - 0.06, base + 0.08), _C["purple"] * 0.8)
    stars = _ellipse(h.u, h.v, 0.0, -h.ry - 0.35, 0.12, 0.12) | (h.torso & _ellipse(h.u, h.v, -0.5, 1.75, 0.12, 0.12))
    _paint(canvas, stars, _C["gold"])


_FACE_ACCESSORIES: dict[str, Callable[[np.ndarray, _Head], None]] = {
    "red_hat": _face_red_hat,
    "santa_hat": _face_santa_hat,
    "rainbow_scarf": _face_scarf,
    "top_hat": _face_top_hat,
    "chef_outfit": _face_chef,
    "firefighter_outfit": _face_firefighter,
    "police_outfit": _face_police,
    "pink_glasses": _face_glasses,
    "wizard_outfit": _face_wizard,
}


def _draw_face(
    canvas: np.ndarray, g: _Grid, subject: Subject, ctx: str, rng: np.random.Generator
) -> tuple[float, float, float, float]:
    """Draw a face subject (head and shoulders); returns the head box (hair included) in [0, 1] image units."""
    cx, cy = 0.5 + rng.uniform(-0.05, 0.05), 0.5 + rng.uniform(-0.04, 0.04)
    hs = 0.24 * rng.uniform(0.93, 1.07)
    u, v = (g.x - cx) / hs, (g.y - cy) / hs
    rx, ry = _FACE_RADII[subject.attr("face_shape")]
    skin = _SKIN_RGB[subject.attr("skin_tone")]
    style, hair_colour = subject.attr("hair_style"), subject.attr("hair_colour")
    if ctx == "red_hair":
        style, hair_colour = ("short" if style == "bald" else style), "red"
    hair = _HAIR_RGB.get(hair_colour)
    shade = 1.0 - 0.06 * (u + v)

    torso = _ellipse(u, v, 0.0, 2.15, 1.6, 1.05)
    _paint(canvas, torso, _SHIRTS.get(ctx, _C["shirt"]) * shade)
    if style == "long":
        back = _ellipse(u, v, 0.0, -0.05, rx + 0.22, ry + 0.12) | _rect(u, v, -rx - 0.22, rx + 0.22, 0.0, 1.45)
        _paint(canvas, back, hair)
    _paint(canvas, _rect(u, v, -0.28, 0.28, 0.5, 1.2), skin * 0.85)  # neck
    _paint(canvas, _ellipse(u, v, 0.0, 0.0, rx, ry), skin * shade)
    if style != "bald":
        cap = _ellipse(u, v, 0.0, -0.04, rx * 1.1, ry * 1.08) & ~_ellipse(u, v, 0.0, 0.3, rx * 0.98, ry * 0.95)
        _paint(canvas, cap & (v < (0.45 if style == "long" else 0.05)), hair)
        if style == "bun":
            _paint(canvas, _ellipse(u, v, 0.0, -ry - 0.18, 0.34, 0.3), hair)

    eye_u = 0.42 * rx
    # Irises only: at 16x16 an eye is about one pixel, which should show the eye colour.
    eyes = _ellipse(u, v, -eye_u, _EYE_V, 0.2, 0.17) | _ellipse(u, v, eye_u, _EYE_V, 0.2, 0.17)
    _paint(canvas, eyes, _EYE_RGB[subject.attr("eye_colour")])
    _paint(canvas, _rect(u, v, -0.05, 0.05, 0.05, 0.3), skin * 0.8)  # nose
    if ctx == "smiling":
        lips = (u * u < 0.42**2) & (v > 0.4 + 0.9 * u * u) & (v < 0.6 + 0.35 * u * u)
        _paint(canvas, lips, _C["lips"])
        _paint(canvas, lips & (v < 0.47 + 0.8 * u * u), _C["white"])
        cheeks = _ellipse(u, v, -0.62 * rx, 0.3, 0.16, 0.12) | _ellipse(u, v, 0.62 * rx, 0.3, 0.16, 0.12)
        _paint(canvas, cheeks, _C["cheek"], alpha=0.45)
    else:
        _paint(canvas, _rect(u, v, -0.25, 0.25, 0.5, 0.57), _C["mouth"])

    if ctx in _FACE_ACCESSORIES:
        _FACE_ACCESSORIES[ctx](canvas, _Head(u, v, rx, ry, eye_u, torso))
    top = ry + {"bald": 0.0, "bun": 0.48}.get(style, 0.08)
    half_width = rx + {"bald": 0.0, "long": 0.22}.get(style, 0.1)
    return cx - half_width * hs, cy - top * hs, cx + half_width * hs, cy + ry * hs
