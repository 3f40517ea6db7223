"""CAFE-mini's teacher: a stand-in for ProFusion that renders targets, sometimes wrongly (paper 3.2).

The paper feeds (subject photo, instruction) pairs to ProFusion and filters its targets
(:mod:`cafe_core.data.filter`). ProFusion's mistakes are what make the filter necessary; CAFE-mini
has no ProFusion, so :class:`Teacher` renders the right answer from the world and, with configured
probabilities, makes the three mistakes that the filter should catch:

- ``identity_drift``: the right context, but another subject of the same class;
- ``ignored_instruction``: the right subject, but neutral or in some other context;
- ``artefacts``: the right render, damaged by heavy noise, blotches or blur.

Each quadruplet keeps its failure as ground truth (:data:`~cafe_core.data.quadruplets.FAILURES`).
The filter never sees it; it is used only to *measure* the filter.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.quadruplets import FAILURES, QuadrupletSet, load_quadruplets, save_quadruplets
from ..data.teachers import TeacherRequest, TeacherTarget
from ..utils.digest import config_hash
from .datasets import NEUTRAL
from .world import DOMAINS, TURN_KINDS, Context, Subject, World

__all__ = ["Quadruplet", "Teacher", "TeacherConfig", "make_quadruplets"]

logger = logging.getLogger(__name__)


_SEED_RANGE = 2**31
_VISIBLE_LEVELS = 24
"""A drifted subject must change some pixel by more than this (of 255). Details that the context
hides (the colour of "a red ball", of a pencil sketch) change renders by 0 to ~20 levels; in
colour scenes, single-detail changes measured 26 levels or more."""
_CACHE_VERSION = 1
"""Part of the cache key: bump it whenever the teacher's output for a given config changes."""

# --- The teacher ----------------------------------------------------------------------------------


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
    """A stand-in for ProFusion: renders the target of an instruction, sometimes wrongly.

    It is a :class:`cafe_core.data.teachers.Teacher` like the real ones (:meth:`make` takes
    requests, ``name`` and ``version`` go into each row's provenance) once it knows its ``world``;
    :meth:`quadruplet` is the world's own path, which also renders the photo ``x``.
    """

    name = "cafe-mini world teacher"

    def __init__(self, config: TeacherConfig | None = None, *, world: World | None = None) -> None:
        self.config = config or TeacherConfig()
        self.world = world

    @property
    def version(self) -> str:
        """Its failure rates and seed, and the world it draws: a change of either makes other targets."""
        world = f" world {config_hash(self.world.config)}" if self.world is not None else ""
        return f"failures {config_hash(self.config)}{world} v{_CACHE_VERSION}"

    def make(self, requests: Sequence[TeacherRequest]) -> list[TeacherTarget]:
        """One target per request (:class:`cafe_core.data.teachers.Teacher`), each a pure function of
        (teacher seed, request seed). The world draws the request's ``subject`` (its id) in its
        ``context`` (a context name of the subject's domain), not the pixels of ``x``; ``truth``
        says what the target really shows, for graders."""
        if self.world is None:
            raise ValueError("the world teacher needs its world to answer requests: Teacher(config, world=world)")
        targets = []
        for request in requests:
            if request.subject is None or request.context is None:
                raise ValueError(
                    f"the world teacher draws a subject id in a named context; request {request.instruction!r} "
                    f"has subject {request.subject!r} and context {request.context!r}"
                )
            subject = self.world.subject(int(request.subject))
            context = self.world.context(subject.domain, request.context)
            q = self.quadruplet(self.world, subject, context, np.random.default_rng([request.seed, 43]))
            truth = {
                "failure": q.failure,
                "y_subject": q.y_subject.id,
                "y_context": None if q.y_context is None else q.y_context.name,
            }
            targets.append(TeacherTarget(y=q.y, truth=truth))
        return targets

    def quadruplet(self, world: World, subject: Subject, context: Context, rng: np.random.Generator) -> Quadruplet:
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


# --- Quadruplet sets ------------------------------------------------------------------------------


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
        out = load_quadruplets(path)
    else:
        rows = tqdm(range(n), desc=f"teacher {split}", mininterval=2.0)
        out = _stack([_draw(world, teacher, split, domains, np.random.default_rng([seed, 31, i])) for i in rows])
        counts = dict(zip(FAILURES, np.bincount(out.failures, minlength=len(FAILURES)).tolist(), strict=True))
        logger.info("teacher made %d %s quadruplets: %s", n, split, counts)
        if path is not None:
            save_quadruplets(out, path)
    out.provenance = provenance(world, teacher, out, seed=seed)
    return out


TEACHER_NAME = Teacher.name


def provenance(world: World, teacher: Teacher, quads: QuadrupletSet, *, seed: int) -> list[dict]:
    """Each quadruplet's dataset columns beyond the arrays: who made it, its subject and context,
    the truth of what ``y`` shows (graders only), and a world-grammar dialogue asking for its
    context (row ``i``'s a pure function of ``(seed, i)``; an ambiguous wish where one leads to
    the context, else a plain request)."""
    version = Teacher(teacher.config, world=world).version
    out = []
    for i in range(len(quads)):
        subject = world.subject(int(quads.subject_ids[i]))
        context = world.contexts(subject.domain)[int(quads.context_ids[i])]
        shown = int(quads.y_context_ids[i])
        rng = np.random.default_rng([seed, 41, i])
        kind = TURN_KINDS[int(rng.integers(len(TURN_KINDS)))]
        try:
            turn = world.turn(subject, kind, rng, context=context)
        except ValueError:  # no vague wish of the domain leads to this context
            turn = world.turn(subject, "declarative", rng, context=context)
        truth = {
            "failure": FAILURES[int(quads.failures[i])],
            "y_subject": int(quads.y_subject_ids[i]),
            "y_context": None if shown == NEUTRAL else world.contexts(subject.domain)[shown].name,
            "x_seed": int(quads.x_seeds[i]),
        }
        out.append(
            {
                "teacher": TEACHER_NAME,
                "teacher_version": version,
                "subject": str(subject.id),
                "context": context.name,
                "truth": json.dumps(truth),
                "messages": [{"role": "user", "content": turn.user}],
                "response": turn.response,
                "kind": turn.kind,
            }
        )
    return out


def _draw(world: World, teacher: Teacher, split: str, domains: tuple[str, ...], rng: np.random.Generator) -> Quadruplet:
    domain = domains[int(rng.integers(len(domains)))]
    subjects, contexts = world.subjects(domain, split), world.contexts(domain)
    subject = subjects[int(rng.integers(len(subjects)))]
    return teacher.quadruplet(world, subject, contexts[int(rng.integers(len(contexts)))], rng)


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
