"""Styles: sketch, black and white, painting.

The styles (whole-image transforms on the high-resolution canvas).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .canvas import (
    _C,
    _Grid,
    _jitter,
)


def _luma(canvas: np.ndarray) -> np.ndarray:
    return 0.299 * canvas[0] + 0.587 * canvas[1] + 0.114 * canvas[2]


def _style_black_and_white(canvas: np.ndarray, g: _Grid, rng: np.random.Generator) -> np.ndarray:
    lum = np.clip((_luma(canvas) - 0.5) * 1.15 + 0.5, 0.0, 1.0)
    return np.broadcast_to(lum, canvas.shape)


def _style_sketch(canvas: np.ndarray, g: _Grid, rng: np.random.Generator) -> np.ndarray:
    lum = _luma(canvas)
    step = max(g.size // 32, 1)  # edges about two output pixels wide survive the downsampling
    grad = np.zeros_like(lum)
    grad[:, step:-step] += np.abs(lum[:, 2 * step :] - lum[:, : -2 * step])
    grad[step:-step] += np.abs(lum[2 * step :] - lum[: -2 * step])
    ink = np.clip(np.clip(grad * 5.0, 0.0, 1.0) + g.hatch * np.clip(0.55 - lum, 0.0, 1.0), 0.0, 1.0)
    paper = _jitter(rng, (0.97, 0.96, 0.92), 0.02)
    return paper + (_C["graphite"] - paper) * ink


def _style_painting(canvas: np.ndarray, g: _Grid, rng: np.random.Generator) -> np.ndarray:
    """Soft, vivid colours with brush strokes, in a gilded frame (what "a painting of" looks like at 16x16)."""
    r = max(g.size // 64, 1)  # a light blur: stronger ones wipe out patterns, i.e. identity
    border = max(g.size // 16, r)  # the frame hides the r pixels at the edge that the blur leaves alone
    k, n = 2 * r + 1, g.size - 2 * r
    rows = sum(canvas[:, i : i + n] for i in range(k))
    blurred = canvas.copy()
    blurred[:, r:-r, r:-r] = sum(rows[:, :, j : j + n] for j in range(k)) * np.float32(1.0 / (k * k))
    mean = blurred.mean(axis=0)
    strokes = np.roll(g.strokes, tuple(rng.integers(0, g.size, 2)), axis=(0, 1))
    out = (mean + (blurred - mean) * 1.6) * (1.0 + 0.14 * strokes) + _C["varnish"]
    frame = _jitter(rng, (0.62, 0.45, 0.16), 0.06)
    out[:, :border], out[:, -border:], out[:, :, :border], out[:, :, -border:] = frame, frame, frame, frame
    return out


_STYLES: dict[str, Callable[[np.ndarray, _Grid, np.random.Generator], np.ndarray]] = {
    "sketch": _style_sketch,
    "black_and_white": _style_black_and_white,
    "painting": _style_painting,
}
