"""How every stage draws from G: one place that reads the guidance scales chosen on validation."""

from __future__ import annotations

import dataclasses

from ...pipeline import Sampling
from ..config import Params
from ..paths import ProjectPaths
from ..results import read_guidance

__all__ = ["sampling"]


def sampling(params: Params, root, guidance: str = "both") -> Sampling:
    """How every stage draws from G: ``params.generator``'s scheduler and steps, and the guidance
    scales the stage ``guidance`` chose on validation subjects (``results/guidance/grid.json``)."""
    chosen = read_guidance(root)
    if chosen is None:
        raise FileNotFoundError(
            f"{ProjectPaths(root).guidance_grid} is missing: run `dvc repro guidance` (it chooses s_c and s_d)"
        )
    return dataclasses.replace(Sampling.from_params(params.generator, chosen), guidance=guidance)
