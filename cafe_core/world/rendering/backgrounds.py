"""Backgrounds: one per scene of the recontextualisation family.

The backgrounds (each one must stay distinct after downsampling to 16x16).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .canvas import (
    _C,
    _cell_noise,
    _Grid,
    _jitter,
    _layered,
    _paint,
    _rect,
    _rgb,
    _triangle,
)

_Background = Callable[[_Grid, np.random.Generator], np.ndarray]


def _phases(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(0.0, 2.0 * np.pi, n).astype(np.float32)


def _sky(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return _jitter(rng, (0.45, 0.68, 0.94)), _jitter(rng, (0.72, 0.84, 0.96))


def _bg_neutral(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    base = _jitter(rng, (0.84, 0.84, 0.84), 0.03) * np.float32(1.0 + rng.uniform(-0.06, 0.06))
    return _layered(g, [(1.0, base + 0.04, base - 0.05)])


def _bg_jungle(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    canvas = _layered(g, [(1.0, _jitter(rng, (0.07, 0.28, 0.09)), _jitter(rng, (0.12, 0.38, 0.1)))])
    p = _phases(rng, 3)
    t = np.sin(g.x * 37.0 + p[0]) * np.sin(g.y * 29.0 + p[1]) + 0.6 * np.sin((g.x - g.y) * 53.0 + p[2])
    _paint(canvas, t > 0.55, _jitter(rng, (0.28, 0.62, 0.18)))
    _paint(canvas, t > 1.2, _jitter(rng, (0.58, 0.8, 0.28)))
    _paint(canvas, t < -0.75, _jitter(rng, (0.02, 0.14, 0.05)))
    return canvas


def _bg_snow(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    h = 0.5 + rng.uniform(-0.06, 0.06)
    canvas = _layered(
        g,
        [
            (h - 0.05, _jitter(rng, (0.76, 0.82, 0.9), 0.03), _jitter(rng, (0.86, 0.9, 0.95), 0.03)),
            (h, _jitter(rng, (0.2, 0.28, 0.26)), _jitter(rng, (0.25, 0.32, 0.3))),  # snowy pines on the horizon
            (1.0, _rgb(0.99, 0.99, 1.0), _jitter(rng, (0.86, 0.9, 0.97), 0.03)),
        ],
    )
    cells = np.float32(12.0)
    flakes = _cell_noise(np.floor(g.x * cells), np.floor(g.y * cells), rng.uniform(0.0, 100.0)) > 0.9
    _paint(canvas, flakes & (g.y < h - 0.05), _C["white"])
    return canvas


def _bg_beach(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    h = 0.32 + rng.uniform(-0.04, 0.04)
    sea = _jitter(rng, (0.04, 0.38, 0.68))
    sand = (1.0, _jitter(rng, (0.96, 0.86, 0.62)), _jitter(rng, (0.9, 0.77, 0.5)))
    return _layered(g, [(h, *_sky(rng)), (h + 0.17, sea, sea * 1.15), (h + 0.2, _C["surf"]), sand])


def _bg_cobblestone(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    h = 0.36 + rng.uniform(-0.04, 0.04)
    wall = _jitter(rng, (0.72, 0.66, 0.58)), _jitter(rng, (0.66, 0.6, 0.52))
    canvas = _layered(g, [(h, *wall), (1.0, wall[1])])
    row = np.floor((g.y - h) / 0.08)
    col = (g.x + rng.uniform(0.0, 0.12) + (row % 2) * 0.06) / 0.12
    stone = 0.36 + 0.24 * _cell_noise(np.floor(col), row, rng.uniform(0.0, 100.0))
    mortar = (((g.y - h) / 0.08) % 1.0 < 0.2) | (col % 1.0 < 0.15)
    ground = g.y >= h
    _paint(canvas, ground, stone * _jitter(rng, (1.0, 0.98, 1.04), 0.02))
    _paint(canvas, ground & mortar, _jitter(rng, (0.2, 0.19, 0.18)))
    return canvas


def _bg_pink_fabric(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    p = _phases(rng, 2)
    folds = 1.0 + 0.13 * np.sin(g.x * 16.0 + 2.5 * np.sin(g.y * 6.0 + p[0]) + p[1])
    return _jitter(rng, (0.96, 0.6, 0.76)) * folds


def _bg_wooden_floor(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    h = 0.42 + rng.uniform(-0.04, 0.04)
    wall = (h, _jitter(rng, (0.92, 0.87, 0.76), 0.03), _jitter(rng, (0.86, 0.8, 0.68), 0.03))
    canvas = _layered(g, [wall, (h + 0.03, _C["skirting"]), (1.0, _jitter(rng, (0.6, 0.38, 0.19)))])
    board = np.floor((g.y - h) / 0.09)
    grain = (0.85 + 0.3 * _cell_noise(board, board, 7.0)) * (1.0 + 0.07 * np.sin(g.x * 90.0 + board * 3.0))
    gaps = ((g.y - h) / 0.09) % 1.0 < 0.15
    _paint(canvas, g.y >= h + 0.03, canvas * np.where(gaps, np.float32(0.55), grain))
    return canvas


def _bg_city(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    road = (1.0, _jitter(rng, (0.26, 0.26, 0.28)), _jitter(rng, (0.2, 0.2, 0.22)))
    canvas = _layered(g, [(0.86, *_sky(rng)), road])
    blocks = 7
    tops = rng.uniform(0.12, 0.5, blocks).astype(np.float32)
    greys = (rng.uniform(0.3, 0.55, blocks) * np.asarray([[0.95], [0.97], [1.05]])).astype(np.float32)
    index = np.minimum((g.x * blocks).astype(np.int64), blocks - 1)
    building = (g.y >= tops[index]) & (g.y < 0.86)
    _paint(canvas, building, greys[:, index])
    windows = building & ((g.x * (blocks * 3.0)) % 1.0 > 0.45) & ((g.y * 16.0) % 1.0 > 0.45) & (g.y < 0.8)
    _paint(canvas, windows, _jitter(rng, (0.96, 0.86, 0.42)))
    return canvas


def _bg_mountain(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    ground = 0.74 + rng.uniform(-0.03, 0.03)
    grass = (1.0, _jitter(rng, (0.36, 0.56, 0.24)), _jitter(rng, (0.28, 0.46, 0.18)))
    canvas = _layered(g, [(ground, *_sky(rng)), grass])
    px, py = 0.5 + rng.uniform(-0.2, 0.2), 0.14 + rng.uniform(0.0, 0.08)
    rock = (g.y > py + np.abs(g.x - px) * 1.1) & (g.y < ground)
    _paint(canvas, rock, _jitter(rng, (0.42, 0.41, 0.52)))
    _paint(canvas, rock & (g.y < py + 0.13), _C["white"])
    return canvas


def _bg_blue_house(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    lawn = (1.0, _jitter(rng, (0.35, 0.6, 0.22)), _jitter(rng, (0.28, 0.5, 0.18)))
    canvas = _layered(g, [(0.74, *_sky(rng)), lawn])
    hx = 0.5 + rng.uniform(-0.06, 0.06)
    _paint(canvas, _rect(g.x, g.y, hx - 0.36, hx + 0.36, 0.38, 0.74), _jitter(rng, (0.18, 0.36, 0.82)))
    _paint(canvas, _triangle(g.x, g.y, (hx, 0.12), hx - 0.44, hx + 0.44, 0.38), _jitter(rng, (0.5, 0.14, 0.1)))
    windows = _rect(g.x, g.y, hx - 0.31, hx - 0.19, 0.46, 0.58) | _rect(g.x, g.y, hx + 0.19, hx + 0.31, 0.46, 0.58)
    _paint(canvas, windows, _C["white"])
    return canvas


def _bg_wheat_field(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    h = 0.38 + rng.uniform(-0.04, 0.04)
    field = (1.0, _jitter(rng, (0.92, 0.78, 0.35)), _jitter(rng, (0.8, 0.58, 0.18)))
    canvas = _layered(g, [(h, *_sky(rng)), field])
    stalks = 1.0 + 0.14 * np.sin(g.x * 110.0 + 3.0 * np.sin(g.y * 20.0 + _phases(rng, 1)))
    _paint(canvas, g.y >= h, canvas * stalks)
    return canvas


def _bg_autumn_leaves(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    h = 0.64 + rng.uniform(-0.04, 0.04)
    ground = (1.0, _jitter(rng, (0.66, 0.34, 0.1)), _jitter(rng, (0.52, 0.26, 0.08)))
    canvas = _layered(g, [(h, _jitter(rng, (0.88, 0.46, 0.12))), ground])
    tx = rng.uniform(0.15, 0.85)
    _paint(canvas, _rect(g.x, g.y, tx - 0.05, tx + 0.05, 0.3, h), _jitter(rng, (0.33, 0.19, 0.09)))
    p = _phases(rng, 3)
    t = np.sin(g.x * 41.0 + p[0]) * np.sin(g.y * 33.0 + p[1]) + 0.6 * np.sin((g.x + g.y) * 57.0 + p[2])
    crown = g.y < h
    _paint(canvas, (t > 0.6) & crown, _jitter(rng, (0.76, 0.16, 0.07)))
    _paint(canvas, (t < -0.8) & crown, _jitter(rng, (0.97, 0.72, 0.16)))
    _paint(canvas, (t > 0.6) & ~crown, _jitter(rng, (0.8, 0.5, 0.12)))
    return canvas


def _bg_water(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    h = 0.14 + rng.uniform(-0.03, 0.03)
    water = (1.0, _jitter(rng, (0.08, 0.34, 0.58)), _jitter(rng, (0.14, 0.48, 0.7)))
    canvas = _layered(g, [(h, *_sky(rng)), water])
    waves = np.sin(g.y * 70.0 + 2.0 * np.sin(g.x * 18.0 + _phases(rng, 1))) > 0.7
    _paint(canvas, waves & (g.y > h), _jitter(rng, (0.45, 0.7, 0.88)))
    return canvas


def _bg_sunflowers(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    h = 0.4 + rng.uniform(-0.04, 0.04)
    grass = (1.0, _jitter(rng, (0.3, 0.62, 0.18)), _jitter(rng, (0.2, 0.48, 0.1)))
    canvas = _layered(g, [(h, *_sky(rng)), grass])
    # At most one flower per cell of a shifted grid: as cheap as a texture, looks scattered.
    cell, salt = 0.2, rng.uniform(0.0, 100.0)
    fx, fy = (g.x + rng.uniform(0.0, cell)) / cell, (g.y + rng.uniform(0.0, cell)) / cell
    ix, iy = np.floor(fx), np.floor(fy)
    du = fx - ix - 0.3 - 0.4 * _cell_noise(ix, iy, salt)
    dv = fy - iy - 0.5
    d2 = du * du + dv * dv
    flower = (_cell_noise(iy, ix, salt) > 0.3) & ((iy + 0.5) * cell > h + 0.05)
    _paint(canvas, flower & (d2 < (0.06 / cell) ** 2), _jitter(rng, (0.99, 0.8, 0.05)))
    _paint(canvas, flower & (d2 < (0.024 / cell) ** 2), _C["seeds"])
    return canvas


def _bg_dirt_road(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    h = 0.36 + rng.uniform(-0.03, 0.03)
    fields = (1.0, _jitter(rng, (0.4, 0.6, 0.25)), _jitter(rng, (0.32, 0.5, 0.2)))
    canvas = _layered(g, [(h, *_sky(rng)), fields])
    t = (g.y - h) / (1.0 - h)
    offset = np.abs(g.x - 0.5 - rng.uniform(-0.1, 0.1) * (1.0 - t)) / (0.04 + 0.5 * t)
    road = (offset < 1.0) & (t >= 0.0)
    _paint(canvas, road, _jitter(rng, (0.62, 0.46, 0.28)))
    _paint(canvas, road & (np.abs(offset - 0.5) < 0.1), _jitter(rng, (0.45, 0.32, 0.18)))
    return canvas


def _bg_purple_rug(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    h = 0.6 + rng.uniform(-0.03, 0.03)
    forest = (h, _jitter(rng, (0.1, 0.3, 0.12)), _jitter(rng, (0.14, 0.36, 0.14)))
    canvas = _layered(g, [forest, (1.0, _jitter(rng, (0.2, 0.38, 0.14)))])
    trunks = ((g.x * 6.0 + rng.uniform(0.0, 1.0)) % 1.0 < 0.2) & (g.y < h)
    _paint(canvas, trunks, _jitter(rng, (0.3, 0.2, 0.12)))
    _paint(canvas, _rect(g.x, g.y, 0.08, 0.92, h + 0.05, 0.97), _jitter(rng, (0.6, 0.3, 0.66)))
    _paint(canvas, _rect(g.x, g.y, 0.12, 0.88, h + 0.08, 0.94), _jitter(rng, (0.46, 0.14, 0.54)))
    return canvas


_BACKGROUNDS: dict[str, _Background] = {
    "jungle": _bg_jungle,
    "snow": _bg_snow,
    "beach": _bg_beach,
    "cobblestone_street": _bg_cobblestone,
    "pink_fabric": _bg_pink_fabric,
    "wooden_floor": _bg_wooden_floor,
    "city": _bg_city,
    "mountain": _bg_mountain,
    "blue_house": _bg_blue_house,
    "wheat_field": _bg_wheat_field,
    "autumn_leaves": _bg_autumn_leaves,
    "water": _bg_water,
    "sunflowers": _bg_sunflowers,
    "dirt_road": _bg_dirt_road,
    "purple_rug": _bg_purple_rug,
}
