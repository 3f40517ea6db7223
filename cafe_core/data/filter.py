"""The automatic filter of paper section 3.2: keep a teacher target when CLIP and DINO agree.

The paper keeps a target image when its CLIP image-instruction similarity is at least 0.3 and
its DINO similarity to the subject photo at least 0.6 (:data:`SD2_FILTER`, valid for CLIP
ViT-B/32 and DINO ViT-S/16). Encoders of other scales (the CAFE-mini world's) get thresholds read
off null distributions instead (:func:`calibrate_thresholds`), graded against the teacher's
ground truth the way the paper's human workers would judge it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..models.encoders import ClipEncoder, DinoEncoder
from .quadruplets import FAILURES, UNKNOWN_FAILURE, QuadrupletSet

__all__ = [
    "SD2_FILTER",
    "Calibration",
    "FilterConfig",
    "FilterScores",
    "apply_filter",
    "calibrate_thresholds",
    "filter_scores",
    "pair_scores",
]

logger = logging.getLogger(__name__)

_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass(frozen=True)
class FilterConfig:
    """Keep a quadruplet when both similarities reach their thresholds."""

    clip_threshold: float
    """Minimum cosine similarity of CLIP embeddings of ``y`` and the instruction."""
    dino_threshold: float
    """Minimum cosine similarity of DINO CLS embeddings of ``x`` and ``y``."""


SD2_FILTER = FilterConfig(clip_threshold=0.3, dino_threshold=0.6)
"""The paper's thresholds, valid only for CLIP ViT-B/32 and DINO ViT-S/16."""


@dataclass(frozen=True, eq=False)
class FilterScores:
    """The filter's two similarities per quadruplet, and the same similarities on mismatched pairs.

    The null pairs keep the class and change what each score should check: ``clip_null`` pairs
    ``y`` with an instruction of another context; ``dino_null`` pairs ``x`` with the ``y`` of
    another subject. :func:`calibrate_thresholds` reads its thresholds off them.
    """

    clip_sim: np.ndarray
    """(N,) cos(CLIP(y), CLIP(instruction))."""
    dino_sim: np.ndarray
    """(N,) cos(DINO(x), DINO(y))."""
    clip_null: np.ndarray
    """(M,) cos(CLIP(y_i), CLIP(instruction_j)): same class, other instruction."""
    dino_null: np.ndarray
    """(M',) cos(DINO(x_i), DINO(y_j)): same class, other subject."""


def filter_scores(
    quads: QuadrupletSet, clip: ClipEncoder, dino: DinoEncoder, batch_size: int = 256, *, seed: int = 0
) -> FilterScores:
    """Score every quadruplet, plus one mismatched null pair per quadruplet (``seed`` picks them).

    The paper filters with CLIP ViT-B/32 and DINO ViT-S/16, not with the model's own
    conditioning encoders, so a pipeline passes its *evaluation* encoders here; filtering with
    ``E_c`` and ``E_d`` would select targets that the model being trained already finds similar.
    """
    instructions = np.array(quads.instructions)
    text, image, dino_x, dino_y = _embeddings(quads.x, quads.instructions, quads.y, clip, dino, batch_size)
    rng = np.random.default_rng([seed, 37])
    classes = np.array(quads.classes)
    clip_rows, clip_partners = _mismatched_partners(classes, instructions, rng)
    dino_rows, dino_partners = _mismatched_partners(classes, quads.subject_ids, rng)
    return FilterScores(
        clip_sim=_cosine(image, text),
        dino_sim=_cosine(dino_x, dino_y),
        clip_null=_cosine(image[clip_rows], text[clip_partners]),
        dino_null=_cosine(dino_x[dino_rows], dino_y[dino_partners]),
    )


def pair_scores(
    x: np.ndarray, instructions: list[str], y: np.ndarray, clip: ClipEncoder, dino: DinoEncoder, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """(cos(CLIP(y), CLIP(instruction)), cos(DINO(x), DINO(y))), each (N,): the filter's two scores
    of new targets (self-distillation's), without the null pairs that calibrate thresholds."""
    text, image, dino_x, dino_y = _embeddings(x, instructions, y, clip, dino, batch_size)
    return _cosine(image, text), _cosine(dino_x, dino_y)


def _embeddings(x, instructions, y, clip: ClipEncoder, dino: DinoEncoder, batch_size: int):
    """Unit CLIP text and image embeddings, DINO CLS of x and of y, as float64 arrays."""
    unique, text_index = np.unique(np.array(instructions), return_inverse=True)  # the world repeats prompts
    text = _numpy(clip.text_embeds(unique.tolist(), normalize=True, batch_size=batch_size))[text_index]
    image = _numpy(clip.image_embeds(y, normalize=True, batch_size=batch_size))
    dino_x = _numpy(dino.cls_embeds(x, normalize=True, batch_size=batch_size))
    dino_y = _numpy(dino.cls_embeds(y, normalize=True, batch_size=batch_size))
    return text, image, dino_x, dino_y


def _numpy(embeds: torch.Tensor) -> np.ndarray:
    return embeds.double().cpu().numpy()


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarities of unit vectors."""
    return np.einsum("nd,nd->n", a, b)


def _mismatched_partners(
    groups: np.ndarray, keys: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """For each row, a uniformly random row of the same group with a different key.

    Rows whose group holds no other key get no partner and are left out.
    """
    rows, partners = [], []
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        members = members[np.argsort(keys[members], kind="stable")]
        sorted_keys = keys[members]
        start = np.searchsorted(sorted_keys, sorted_keys, side="left")
        same = np.searchsorted(sorted_keys, sorted_keys, side="right") - start
        has_other = same < len(members)
        # Draw among the members outside each row's own run of equal keys [start, start + same).
        pick = rng.integers(len(members) - same[has_other])
        pick = np.where(pick < start[has_other], pick, pick + same[has_other])
        rows.append(members[has_other])
        partners.append(members[pick])
    return np.concatenate(rows), np.concatenate(partners)


def apply_filter(scores: FilterScores, config: FilterConfig) -> np.ndarray:
    """Boolean (N,) mask of the quadruplets to keep: both similarities at or above their thresholds."""
    return (scores.clip_sim >= config.clip_threshold) & (scores.dino_sim >= config.dino_threshold)


# --- Calibration (the mini profile) ---------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """Thresholds picked from the scores alone, and how well they filter, judged by the ground truth.

    Rates of a failure mode are fractions of that mode's quadruplets; for ``"none"`` they are
    the share of *good* targets lost.
    """

    filter: FilterConfig
    level: float
    """Each threshold is this quantile of its null distribution."""
    null_quantiles: dict[str, dict[str, float]]
    """Score (``"clip"``, ``"dino"``) -> quantile name -> value, over the mismatched pairs."""
    score_quantiles: dict[str, dict[str, dict[str, float]]]
    """Score -> failure mode -> quantile name -> value, over the quadruplets."""
    rejection_rates: dict[str, dict[str, float]]
    """Failure mode -> share rejected by the CLIP test, the DINO test, and the filter (either)."""
    kept_fraction: float
    precision: float
    """Share of kept quadruplets that are right (NaN when nothing is kept)."""
    recall: float
    """Share of right quadruplets that are kept."""

    def to_dict(self) -> dict[str, Any]:
        """Nested plain floats for JSON (NaN, e.g. precision when nothing is kept, becomes None)."""
        return _finite(dataclasses.asdict(self))


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def calibrate_thresholds(scores: FilterScores, failures: np.ndarray, level: float = 0.95) -> Calibration:
    """Pick each threshold as the ``level`` quantile of its null distribution, then grade the filter.

    The thresholds come from the scores alone. At the default 0.95, a threshold lets through 5%
    of the mismatched pairs, which show another context of the class (CLIP) or another subject
    of the class (DINO): a one-sided test, at level 0.05, of "matches no better than a mismatch".
    ``failures`` (indices into :data:`FAILURES`) only grade the result; rows of unknown failure
    (:data:`UNKNOWN_FAILURE`, real data) are graded as their own group and left out of precision and recall.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if len(scores.clip_null) == 0 or len(scores.dino_null) == 0:
        raise ValueError("the null distributions are empty: every class needs two instructions and two subjects")
    config = FilterConfig(
        clip_threshold=float(np.quantile(scores.clip_null, level)),
        dino_threshold=float(np.quantile(scores.dino_null, level)),
    )
    passes = {"clip": scores.clip_sim >= config.clip_threshold, "dino": scores.dino_sim >= config.dino_threshold}
    keep = passes["clip"] & passes["dino"]
    right, known = failures == FAILURES.index("none"), failures != UNKNOWN_FAILURE
    modes = {name: failures == code for code, name in enumerate(FAILURES) if np.any(failures == code)}
    if not known.all():
        modes["unknown"] = ~known
    calibration = Calibration(
        filter=config,
        level=level,
        null_quantiles={"clip": _quantiles(scores.clip_null), "dino": _quantiles(scores.dino_null)},
        score_quantiles={
            "clip": {name: _quantiles(scores.clip_sim[rows]) for name, rows in modes.items()},
            "dino": {name: _quantiles(scores.dino_sim[rows]) for name, rows in modes.items()},
        },
        rejection_rates={
            name: {test: _share(~passed[rows]) for test, passed in (*passes.items(), ("filter", keep))}
            for name, rows in modes.items()
        },
        kept_fraction=_share(keep),
        precision=_share(right[keep & known]) if (keep & known).any() else float("nan"),
        recall=_share(keep[right]) if right.any() else float("nan"),
    )
    logger.info(
        "filter at the %.2f null quantile (clip >= %.3f, dino >= %.3f) keeps %.1f%%: precision %.3f, recall %.3f",
        level,
        config.clip_threshold,
        config.dino_threshold,
        100 * calibration.kept_fraction,
        calibration.precision,
        calibration.recall,
    )
    return calibration


def _quantiles(values: np.ndarray) -> dict[str, float]:
    return {f"q{round(100 * q):02d}": float(v) for q, v in zip(_QUANTILES, np.quantile(values, _QUANTILES))}


def _share(mask: np.ndarray) -> float:
    return float(np.mean(mask))
