"""Matplotlib figures the notebooks and MLflow runs share."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import numpy as np


def image_grid(
    rows: Sequence[Sequence[np.ndarray]],
    *,
    row_titles: Sequence[str] = (),
    col_titles: Sequence[str] = (),
    cell_titles: Sequence[Sequence[str]] = (),
    scale: float = 1.1,
):
    """A grid of uint8 HWC images, one list per row, with optional wrapped titles.

    `col_titles` label the top row; `cell_titles` (one list per row) label every image.
    """
    from matplotlib.figure import Figure

    n_rows = len(rows)
    n_cols = max(len(r) for r in rows)
    # A Figure outside pyplot: nothing global keeps it alive once saved or logged (stages draw many).
    fig = Figure(figsize=(scale * n_cols + 1.5, scale * n_rows + 0.4))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(row):
                ax.imshow(row[j], interpolation="nearest")
            title = cell_titles[i][j] if i < len(cell_titles) and j < len(cell_titles[i]) else None
            if title is None and i == 0 and j < len(col_titles):
                title = col_titles[j]
            if title:
                ax.set_title("\n".join(textwrap.wrap(title, 16)), fontsize=6)
        if i < len(row_titles):
            axes[i][0].set_ylabel(
                "\n".join(textwrap.wrap(row_titles[i], 18)), fontsize=6, rotation=0, ha="right", va="center"
            )
    fig.tight_layout()
    return fig


def figure_to_array(fig, dpi: int = 120) -> np.ndarray:
    """A figure rendered to uint8 (H, W, 3): what MLflow's ``log_image`` keeps per step."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


def save_figure(fig, path, dpi: int = 150):
    """Write ``fig`` as a PNG at ``path`` atomically: a killed stage leaves no half image."""
    from ..utils.files import atomic_write

    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
