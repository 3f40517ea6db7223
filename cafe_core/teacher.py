"""Training data of CAFE (paper section 3.2): a teacher makes targets, an automatic filter cleans them.

The paper feeds (subject photo, instruction) pairs to ProFusion and keeps a target image when
its CLIP image-instruction similarity is at least 0.3 and its DINO similarity to the subject
photo at least 0.6. ProFusion's mistakes are what make the filter necessary; CAFE-mini has no
ProFusion, so :class:`Teacher` renders the right answer from the world and, with configured
probabilities, makes the three mistakes that the filter should catch:

- ``identity_drift``: the right context, but another subject of the same class;
- ``ignored_instruction``: the right subject, but neutral or in some other context;
- ``artefacts``: the right render, damaged by heavy noise, blotches or blur.

Each quadruplet keeps its failure as ground truth. The filter never sees it; it is used only
to *measure* the filter (:func:`calibrate_thresholds`), the way the paper's human workers
would judge it.

The paper's thresholds are absolute numbers for CLIP ViT-B/32 and DINO ViT-S/16
(:data:`SD2_FILTER`); the world's tiny encoders have their own scales, so the ``mini``
profile picks its thresholds from null distributions instead (:func:`calibrate_thresholds`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file
from tqdm.auto import tqdm

from .data import NEUTRAL, config_hash
from .encoders import ClipEncoder, DinoEncoder
from .files import atomic_save_safetensors
from .world import DOMAINS, Context, Subject, World

__all__ = [
    "FAILURES",
    "SD2_FILTER",
    "Calibration",
    "FilterConfig",
    "FilterScores",
    "Quadruplet",
    "QuadrupletSet",
    "Teacher",
    "TeacherConfig",
    "apply_filter",
    "calibrate_thresholds",
    "filter_scores",
    "make_quadruplets",
]

logger = logging.getLogger(__name__)

FAILURES = ("none", "identity_drift", "ignored_instruction", "artefacts")
"""Ground-truth outcomes of the teacher; a quadruplet set stores each as its index here."""

_SEED_RANGE = 2**31
_VISIBLE_LEVELS = 24
"""A drifted subject must change some pixel by more than this (of 255). Details that the context
hides (the colour of "a red ball", of a pencil sketch) change renders by 0 to ~20 levels; in
colour scenes, single-detail changes measured 26 levels or more."""
_CACHE_VERSION = 1
"""Part of the cache key: bump it whenever the teacher's output for a given config changes."""
_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


# --------------------------------------------------------------------------------------
# The teacher
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TeacherConfig:
    """How often the teacher makes each mistake; the rest of its targets are right."""

    identity_drift_p: float = 0.15
    ignore_instruction_p: float = 0.15
    artefact_p: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        probabilities = (self.identity_drift_p, self.ignore_instruction_p, self.artefact_p)
        if any(not 0.0 <= p <= 1.0 for p in probabilities) or sum(probabilities) > 1.0:
            raise ValueError(f"failure probabilities must lie in [0, 1] and sum to at most 1, got {probabilities}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")


@dataclass(frozen=True, eq=False)  # compared by identity: == on the image arrays has no single truth value
class Quadruplet:
    """One teacher sample: subject photo ``x``, instruction, target ``y``, and what ``y`` really shows."""

    subject: Subject
    context: Context
    """The instruction's context."""
    instruction: str
    """DreamBench-style prompt naming only the class, e.g. ``"a ball on the beach"``."""
    x: np.ndarray
    """uint8 (H, W, 3): a neutral photo of the subject, from its own render seed."""
    y: np.ndarray
    """uint8 (H, W, 3): the teacher's target."""
    failure: str
    """One of :data:`FAILURES`; ground truth that no filter may read."""
    x_seed: int
    y_seed: int
    y_subject: Subject
    """The subject ``y`` shows (another one after identity drift)."""
    y_context: Context | None
    """The context ``y`` shows (``None``: neutral)."""


class Teacher:
    """A stand-in for ProFusion: renders the target of an instruction, sometimes wrongly."""

    def __init__(self, config: TeacherConfig | None = None) -> None:
        self.config = config or TeacherConfig()

    def make(self, world: World, subject: Subject, context: Context, rng: np.random.Generator) -> Quadruplet:
        """One quadruplet; a pure function of (teacher seed, the state of ``rng``).

        ``rng`` supplies the render seeds and a key that, mixed with the teacher's own seed,
        drives every choice the teacher makes: teachers of other seeds given equal streams draw
        the same scenes and make different mistakes.
        """
        x_seed = int(rng.integers(_SEED_RANGE))
        y_seed = (x_seed + 1 + int(rng.integers(_SEED_RANGE - 1))) % _SEED_RANGE  # never x's scene
        gen = np.random.default_rng([self.config.seed, int(rng.integers(2**63))])
        failure = self._draw_failure(gen)
        y, y_subject, y_context = _TARGETS[failure](world, subject, context, y_seed, gen)
        return Quadruplet(
            subject=subject,
            context=context,
            instruction=world.prompt(subject, context),
            x=world.render(subject, None, x_seed).image,
            y=y,
            failure=failure,
            x_seed=x_seed,
            y_seed=y_seed,
            y_subject=y_subject,
            y_context=y_context,
        )

    def _draw_failure(self, gen: np.random.Generator) -> str:
        c = self.config
        probabilities = (c.identity_drift_p, c.ignore_instruction_p, c.artefact_p)
        index = int(np.searchsorted(np.cumsum(probabilities), gen.random(), side="right"))
        return FAILURES[index + 1] if index < len(probabilities) else "none"


_Target = tuple[np.ndarray, Subject, Context | None]


def _right_target(world: World, subject: Subject, context: Context, seed: int, gen: np.random.Generator) -> _Target:
    return world.render(subject, context, seed).image, subject, context


def _drifted_target(world: World, subject: Subject, context: Context, seed: int, gen: np.random.Generator) -> _Target:
    """Another subject of the same class and split, in the right scene, visibly different from the right one.

    The same split keeps evaluation subjects out of training targets. Hidden details (any
    colour in "a red ball") would make an invisible drift, so candidates are tried in a
    random order until one changes the render.
    """
    right = world.render(subject, context, seed).image
    for other in _drift_candidates(world, subject, gen):
        image = world.render(other, context, seed).image
        if np.abs(image.astype(np.int16) - right).max() > _VISIBLE_LEVELS:
            return image, other, context
    raise RuntimeError(f"no {subject.cls} looks different from subject {subject.id} in context {context.name!r}")


def _drift_candidates(world: World, subject: Subject, gen: np.random.Generator) -> list[Subject]:
    """Same-class subjects in a random order: k changed details with probability ~ 2^-k (drift is mostly subtle)."""
    others = [s for s in world.subjects(subject.domain, subject.split) if s.cls == subject.cls and s != subject]
    changed = np.array([sum(a != b for a, b in zip(s.attrs, subject.attrs, strict=True)) for s in others])
    per_count = np.bincount(changed)
    weights = 0.5**changed / per_count[changed]  # uniform within a count of changed details
    order = gen.choice(len(others), size=len(others), replace=False, p=weights / weights.sum())
    return [others[i] for i in order]


def _ignoring_target(world: World, subject: Subject, context: Context, seed: int, gen: np.random.Generator) -> _Target:
    """The right subject, neutral (half the time) or in another random context of its domain.

    Rarely the result still fits the instruction (a neutral red ball for "a red ball"); it keeps
    its label, as a real teacher's log would: the filter is graded against what was asked.
    """
    others = [c for c in world.contexts(subject.domain) if c != context]
    shown = None if gen.random() < 0.5 else others[int(gen.integers(len(others)))]
    return world.render(subject, shown, seed).image, subject, shown


def _damaged_target(world: World, subject: Subject, context: Context, seed: int, gen: np.random.Generator) -> _Target:
    image = world.render(subject, context, seed).image.astype(np.float32) / 255.0
    damage = _ARTEFACTS[int(gen.integers(len(_ARTEFACTS)))]
    damaged = np.clip(damage(image, gen), 0.0, 1.0)
    return (damaged * 255.0 + 0.5).astype(np.uint8), subject, context


def _heavy_noise(image: np.ndarray, gen: np.random.Generator) -> np.ndarray:
    return image + gen.normal(0.0, 0.25, image.shape).astype(np.float32)


def _blotches(image: np.ndarray, gen: np.random.Generator) -> np.ndarray:
    """Three to six opaque ellipses of random colours, each 8-20% of the side in radius."""
    size = image.shape[0]
    yy, xx = np.mgrid[:size, :size] + 0.5
    out = image.copy()
    for _ in range(int(gen.integers(3, 7))):
        (cy, cx), (ry, rx) = gen.uniform(0, size, 2), gen.uniform(0.08, 0.2, 2) * size
        out[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0] = gen.uniform(0.0, 1.0, 3)
    return out


def _blur(image: np.ndarray, gen: np.random.Generator) -> np.ndarray:
    """Separable Gaussian blur, sigma 6-12% of the side: the subject's fine details wash out."""
    sigma = gen.uniform(0.06, 0.12) * image.shape[0]
    radius = max(1, int(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    for axis in (0, 1):
        padding = [(radius, radius) if a == axis else (0, 0) for a in range(3)]
        padded = np.pad(image, padding, mode="edge")
        n = image.shape[axis]
        image = sum(w * np.take(padded, np.arange(i, i + n), axis=axis) for i, w in enumerate(taps))
    return image


_ARTEFACTS: tuple[Callable[[np.ndarray, np.random.Generator], np.ndarray], ...] = (_heavy_noise, _blotches, _blur)
_TARGETS: dict[str, Callable[[World, Subject, Context, int, np.random.Generator], _Target]] = {
    "none": _right_target,
    "identity_drift": _drifted_target,
    "ignored_instruction": _ignoring_target,
    "artefacts": _damaged_target,
}


# --------------------------------------------------------------------------------------
# Quadruplet sets
# --------------------------------------------------------------------------------------


@dataclass(eq=False)
class QuadrupletSet:
    """Index-aligned quadruplets: arrays for the images and ground truth, lists for the texts."""

    x: np.ndarray
    """uint8 (N, H, W, 3) subject photos."""
    y: np.ndarray
    """uint8 (N, H, W, 3) teacher targets."""
    subject_ids: np.ndarray
    context_ids: np.ndarray
    """The instructions' contexts (ids within the subject's domain)."""
    y_subject_ids: np.ndarray
    y_context_ids: np.ndarray
    """What ``y`` shows; :data:`cafe_core.data.NEUTRAL` for a neutral scene."""
    failures: np.ndarray
    """Indices into :data:`FAILURES` (ground truth, never an input of the filter)."""
    x_seeds: np.ndarray
    y_seeds: np.ndarray
    instructions: list[str]
    classes: list[str]
    """Each subject's class word, as the instruction names it (the filter's null pairs keep it)."""

    def __len__(self) -> int:
        return len(self.x)

    def select(self, index: np.ndarray | slice) -> QuadrupletSet:
        """The rows at ``index`` (integers, a boolean mask such as :func:`apply_filter`'s, or a slice)."""
        rows = np.arange(len(self))[index]
        columns = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return QuadrupletSet(
            **{name: v[rows] if isinstance(v, np.ndarray) else [v[i] for i in rows] for name, v in columns.items()}
        )

    def failure_names(self) -> list[str]:
        return [FAILURES[code] for code in self.failures]


def make_quadruplets(
    world: World,
    teacher: Teacher,
    n: int,
    *,
    split: str,
    seed: int,
    cache_dir: str | os.PathLike | None = None,
    domains: tuple[str, ...] = DOMAINS,
) -> QuadrupletSet:
    """``n`` teacher quadruplets of ``split`` subjects (domain, subject and context each uniform).

    Row ``i`` is a pure function of ``(seed, i)`` and the configs, so a larger set extends a
    smaller one. With ``cache_dir`` the set is written once, atomically, under a key hashed
    from everything that produced it.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    key = config_hash(world.config, teacher.config, n, split, seed, domains, _CACHE_VERSION)
    path = Path(cache_dir) / f"quadruplets-{split}-{key}.safetensors" if cache_dir else None
    if path is not None and path.is_file():
        return _load(path)
    rows = tqdm(range(n), desc=f"teacher {split}", mininterval=2.0)
    out = _stack([_draw(world, teacher, split, domains, np.random.default_rng([seed, 31, i])) for i in rows])
    counts = dict(zip(FAILURES, np.bincount(out.failures, minlength=len(FAILURES)).tolist(), strict=True))
    logger.info("teacher made %d %s quadruplets: %s", n, split, counts)
    if path is not None:
        arrays = {f.name: v for f in dataclasses.fields(out) if isinstance(v := getattr(out, f.name), np.ndarray)}
        meta = {"instructions": out.instructions, "classes": out.classes}
        atomic_save_safetensors(arrays, path, metadata={"meta": json.dumps(meta)})
    return out


def _draw(world: World, teacher: Teacher, split: str, domains: tuple[str, ...], rng: np.random.Generator) -> Quadruplet:
    domain = domains[int(rng.integers(len(domains)))]
    subjects, contexts = world.subjects(domain, split), world.contexts(domain)
    subject = subjects[int(rng.integers(len(subjects)))]
    return teacher.make(world, subject, contexts[int(rng.integers(len(contexts)))], rng)


def _stack(quads: Sequence[Quadruplet]) -> QuadrupletSet:
    def ids(values: Sequence[int]) -> np.ndarray:
        return np.array(values, np.int64)

    return QuadrupletSet(
        x=np.stack([q.x for q in quads]),
        y=np.stack([q.y for q in quads]),
        subject_ids=ids([q.subject.id for q in quads]),
        context_ids=ids([q.context.id for q in quads]),
        y_subject_ids=ids([q.y_subject.id for q in quads]),
        y_context_ids=ids([NEUTRAL if q.y_context is None else q.y_context.id for q in quads]),
        failures=ids([FAILURES.index(q.failure) for q in quads]),
        x_seeds=ids([q.x_seed for q in quads]),
        y_seeds=ids([q.y_seed for q in quads]),
        instructions=[q.instruction for q in quads],
        classes=[q.subject.cls for q in quads],
    )


def _load(path: Path) -> QuadrupletSet:
    arrays = load_file(path)
    with safe_open(path, "np") as f:
        texts = json.loads(f.metadata()["meta"])
    logger.info("loaded %d quadruplets from %s", len(arrays["x"]), path)
    return QuadrupletSet(**arrays, **texts)


# --------------------------------------------------------------------------------------
# The automatic filter
# --------------------------------------------------------------------------------------


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
    unique, text_index = np.unique(instructions, return_inverse=True)  # the world repeats prompts
    text = _numpy(clip.text_embeds(unique.tolist(), normalize=True, batch_size=batch_size))[text_index]
    image = _numpy(clip.image_embeds(quads.y, normalize=True, batch_size=batch_size))
    dino_x = _numpy(dino.cls_embeds(quads.x, normalize=True, batch_size=batch_size))
    dino_y = _numpy(dino.cls_embeds(quads.y, normalize=True, batch_size=batch_size))

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


# --------------------------------------------------------------------------------------
# Calibration (the mini profile)
# --------------------------------------------------------------------------------------


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
    ``failures`` (indices into :data:`FAILURES`) only grade the result.
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
    right = failures == FAILURES.index("none")
    modes = {name: failures == code for code, name in enumerate(FAILURES) if np.any(failures == code)}
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
        precision=_share(right[keep]) if keep.any() else float("nan"),
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
