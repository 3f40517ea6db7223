"""The canvas the world draws on: colours, primitives and box downsampling.

The canvas is channel-first, (3, S, S) float32 in [0, 1]: numpy fills a mask in three planes
about four times faster than in interleaved RGB, and filling masks is most of a render's cost.
Colours are (3, 1, 1) arrays so that they broadcast against the planes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def _rgb(r: float, g: float, b: float) -> np.ndarray:
    return np.asarray((r, g, b), np.float32).reshape(3, 1, 1)


def _palette(**colours: tuple[float, float, float]) -> dict[str, np.ndarray]:
    return {name: _rgb(*rgb) for name, rgb in colours.items()}


_BODY_RGB = _palette(
    red=(0.86, 0.1, 0.1),
    orange=(0.97, 0.52, 0.08),
    yellow=(0.97, 0.87, 0.12),
    green=(0.18, 0.68, 0.18),
    teal=(0.05, 0.58, 0.58),
    blue=(0.14, 0.28, 0.9),
    purple=(0.55, 0.18, 0.75),
    pink=(0.98, 0.5, 0.74),
)
_PATTERN_RGB = _palette(white=(0.97, 0.97, 0.97), black=(0.07, 0.07, 0.07), gold=(0.83, 0.66, 0.18))
_SKIN_RGB = _palette(
    pale=(0.99, 0.88, 0.8),
    fair=(0.93, 0.75, 0.6),
    tan=(0.8, 0.58, 0.4),
    brown=(0.58, 0.38, 0.24),
    dark=(0.34, 0.21, 0.13),
)
_HAIR_RGB = _palette(
    black=(0.07, 0.06, 0.06),
    brown=(0.38, 0.22, 0.1),
    blond=(0.94, 0.8, 0.42),
    auburn=(0.55, 0.17, 0.07),
    grey=(0.66, 0.66, 0.66),
    red=(0.93, 0.2, 0.05),
)
_EYE_RGB = _palette(brown=(0.33, 0.18, 0.08), blue=(0.15, 0.45, 0.95), green=(0.15, 0.62, 0.25))
_C = _palette(
    white=(0.97, 0.97, 0.97),
    black=(0.06, 0.06, 0.07),
    grey=(0.35, 0.35, 0.38),
    red=(0.86, 0.1, 0.12),
    pink=(1.0, 0.38, 0.72),
    gold=(0.9, 0.72, 0.2),
    yellow=(0.97, 0.85, 0.15),
    purple=(0.45, 0.15, 0.62),
    navy=(0.1, 0.14, 0.36),
    shirt=(0.32, 0.35, 0.42),
    firecoat=(0.2, 0.19, 0.18),
    mouth=(0.55, 0.22, 0.22),
    lips=(0.45, 0.08, 0.1),
    cheek=(0.95, 0.5, 0.5),
    droplet=(0.82, 0.92, 1.0),
    wet_tint=(0.02, 0.06, 0.14),
    surf=(0.95, 0.97, 0.97),
    seeds=(0.33, 0.18, 0.05),
    skirting=(0.3, 0.18, 0.1),
    graphite=(0.22, 0.22, 0.25),
    varnish=(0.04, 0.02, -0.04),
)
_RAINBOW = np.asarray(
    [(0.9, 0.1, 0.1), (0.98, 0.55, 0.05), (0.97, 0.9, 0.1), (0.15, 0.7, 0.2), (0.15, 0.35, 0.9), (0.5, 0.15, 0.7)],
    np.float32,
).T  # (3, 6)


@dataclass(frozen=True)
class _Grid:
    """Pixel-centre coordinates in [0, 1] of the high-resolution canvas, kept 1-D for cheap broadcasting."""

    size: int
    y: np.ndarray  # (S, 1)
    x: np.ndarray  # (1, S)
    hatch: np.ndarray  # (S, S) bool, diagonal hatching for the sketch style
    strokes: np.ndarray  # (S, S) float, brush texture for the painting style

    @classmethod
    def make(cls, size: int, scale: int) -> _Grid:
        c = (np.arange(size, dtype=np.float32) + 0.5) / np.float32(size)
        i = np.arange(size)
        hatch = (i[:, None] + i[None, :]) % max(2 * scale, 4) < max(scale // 2, 1)
        x, y = c[None, :], c[:, None]
        strokes = np.sin(x * 47.0 + 3.0 * np.sin(y * 11.0)) * np.sin(y * 31.0 - x * 9.0)
        return cls(size, y, x, hatch, strokes)


def _jitter(rng: np.random.Generator, rgb: Sequence[float], amount: float = 0.05) -> np.ndarray:
    """A colour varied per render, so that a background is recognisable but never twice the same."""
    return (_rgb(*rgb) * (1.0 + rng.uniform(-amount, amount, (3, 1, 1)))).astype(np.float32)


def _rows(t: np.ndarray, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """Row colours (3, n, 1) of a vertical gradient; t is (n, 1) in [0, 1]."""
    return top + (bottom - top) * np.clip(t, 0.0, 1.0)


def _layered(g: _Grid, bands: Sequence[tuple[float, np.ndarray] | tuple[float, np.ndarray, np.ndarray]]) -> np.ndarray:
    """Canvas of horizontal bands from the top down: ``(bottom_edge, colour)`` or ``(bottom_edge, top, bottom)``.

    The last band must end at 1.0.
    """
    rows = np.empty((3, g.size, 1), np.float32)
    start = 0.0
    for end, top, *bottom in bands:
        sel = (g.y[:, 0] >= start) & (g.y[:, 0] < end)
        rows[:, sel] = _rows((g.y[sel] - start) / max(end - start, 1e-6), top, bottom[0] if bottom else top)
        start = end
    return np.repeat(rows, g.size, axis=2)


def _cell_noise(ix: np.ndarray, iy: np.ndarray, salt: float) -> np.ndarray:
    """Cheap deterministic hash in [0, 1) of integer cell coordinates."""
    h = np.sin(ix * 12.9898 + iy * 78.233 + salt) * 43758.547
    return (h - np.floor(h)).astype(np.float32)


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float) -> np.ndarray:
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 < 1.0


def _rect(u: np.ndarray, v: np.ndarray, u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
    return ((u >= u0) & (u <= u1)) & ((v >= v0) & (v <= v1))


def _triangle(
    u: np.ndarray, v: np.ndarray, apex: tuple[float, float], left: float, right: float, base: float
) -> np.ndarray:
    """Triangle with an apex point and a horizontal base from ``left`` to ``right`` at height ``base``."""
    t = (base - v) / (base - apex[1])  # 0 on the base, 1 at the apex
    return (t >= 0.0) & (t <= 1.0) & (u >= left + (apex[0] - left) * t) & (u <= right + (apex[0] - right) * t)


def _paint(canvas: np.ndarray, mask: np.ndarray, rgb: np.ndarray, alpha: float = 1.0) -> None:
    """Fill ``mask`` (any shape broadcastable to (S, S)) with a colour or a (3, S, S) colour field."""
    np.copyto(canvas, rgb if alpha >= 1.0 else canvas * (1.0 - alpha) + rgb * alpha, where=mask)


def _rainbow(canvas: np.ndarray, mask: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    _paint(canvas, mask, _RAINBOW[:, np.floor((u + v) * 3.0).astype(np.int64) % _RAINBOW.shape[1]])


def _downsample(canvas: np.ndarray, k: int) -> np.ndarray:
    """Mean over k x k blocks: the anti-aliasing step (``mean(axis=(1, 3))`` is several times slower)."""
    rows = sum(canvas[:, i::k] for i in range(k))
    return sum(rows[:, :, j::k] for j in range(k)) * np.float32(1.0 / (k * k))
