"""CAFE-mini's evaluation cases: DreamBench-style subjects, photos and prompts from the world's held-out subjects."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..data.cases import EvalCase, EvalPrompt, cafe_prompt
from .world import Context, Subject, World

__all__ = ["VALIDATION_EVERY", "mini_eval_cases"]

VALIDATION_EVERY = 8
"""Every eighth held-out subject (world order) is a validation subject: sampling settings are
chosen on those, and the tables are measured on the others."""


def mini_eval_cases(
    world: World,
    domain: str,
    n_subjects: int,
    n_prompts: int,
    seed: int,
    *,
    n_references: int = 4,
    part: str = "test",
) -> list[EvalCase]:
    """DreamBench-style cases on ``n_subjects`` held-out subjects of ``domain``.

    Subjects come from the eval split only (tuning-free means unseen subjects) and keep world
    order; ``part`` ``"val"`` draws from its validation subjects, ``"test"`` from the others.
    Every case shares the same ``n_prompts`` contexts, so per-subject scores compare;
    ``n_prompts=len(world.contexts(domain))`` (25) is the full protocol. Each subject gets its own
    render seeds, so no two subjects share a scene. Everything is fixed by ``seed``. A case's
    ``key`` is the world's subject and each prompt's ``key`` its context.
    """
    if part not in ("test", "val"):
        raise ValueError(f"part must be 'test' or 'val', got {part!r}")
    rng = np.random.default_rng(seed)
    held_out = world.subjects(domain, "eval")
    subjects = [s for i, s in enumerate(held_out) if (i % VALIDATION_EVERY == 0) == (part == "val")]
    contexts = world.contexts(domain)
    _check_count("n_subjects", n_subjects, len(subjects))
    _check_count("n_prompts", n_prompts, len(contexts))
    if n_references < 1:
        raise ValueError(f"n_references must be >= 1, got {n_references}")
    chosen = [subjects[i] for i in np.sort(rng.choice(len(subjects), n_subjects, replace=False))]
    chosen_contexts = [contexts[i] for i in np.sort(rng.choice(len(contexts), n_prompts, replace=False))]
    return [_mini_case(world, subject, chosen_contexts, n_references, rng) for subject in chosen]


def _mini_case(
    world: World, subject: Subject, contexts: Sequence[Context], n_references: int, rng: np.random.Generator
) -> EvalCase:
    seeds = rng.choice(2**31, size=n_references, replace=False).tolist()
    photos = world.render_batch([subject] * n_references, [None] * n_references, seeds)
    prompts = [
        EvalPrompt(
            world.prompt(subject, context),
            cafe_prompt(world.request(subject, context), rng),
            context.phrase.format("subject"),
            key=context,
        )
        for context in contexts
    ]
    return EvalCase(subject.name, subject.domain, photos, prompts, key=subject)


def _check_count(name: str, value: int, available: int) -> None:
    if not 1 <= value <= available:
        raise ValueError(f"{name} must be between 1 and {available}, got {value}")
