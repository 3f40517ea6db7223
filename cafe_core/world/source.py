"""CAFE-mini as a data source: teacher quadruplets, dialogues, held-out evaluation subjects, and their truth."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.cases import EvalCase
from ..data.dialogues import DialogueSet
from ..data.quadruplets import QuadrupletSet
from ..data.sources import PARTS, DataSource
from .cases import mini_eval_cases
from .datasets import dialogue_set, validation_subjects
from .fidelity import FidelityProbe
from .quality import assistant_quality
from .teacher import Teacher, make_quadruplets
from .world import DOMAINS, World

__all__ = ["WorldSource"]


class WorldSource(DataSource):
    """Every kind of data, from the procedural world; training data comes from training-split
    subjects only, evaluation cases from held-out ones."""

    name = "world"
    domains = DOMAINS

    def __init__(self, world: World, teacher: Teacher | None = None, fidelity_probe: Path | None = None) -> None:
        """``fidelity_probe``: the trained probe's folder, which :meth:`judge_fidelity` loads on first use."""
        self.world = world
        self.teacher = teacher or Teacher(world=world)
        self.fidelity_probe = fidelity_probe
        self._probe: FidelityProbe | None = None

    def quadruplets(self, n: int, *, seed: int, cache_dir: Path | None = None) -> QuadrupletSet:
        return make_quadruplets(self.world, self.teacher, n, split="train", seed=seed, cache_dir=cache_dir)

    def dialogues(
        self, n: int, *, part: str, seed: int, multi_turn_p: float = 0.0, cache_dir: Path | None = None
    ) -> DialogueSet:
        """Dialogues of fitting subjects (``"fit"``) or of every tenth training subject (``"val"``)."""
        if part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, got {part!r}")
        fit, val = validation_subjects(self.world.subjects(split="train"))
        subjects = fit if part == "fit" else val
        return dialogue_set(self.world, subjects, n, seed=seed, multi_turn_p=multi_turn_p, cache_dir=cache_dir)

    def subject_words(self) -> list[str]:
        return sorted({subject.cls for subject in self.world.subjects()})

    def response_fulfils(self, subject_id: int, response: str, valid: Sequence[str]) -> bool:
        found = self.world.find_context(self.world.subject(int(subject_id)).domain, response)
        return found is not None and found.name in valid

    def eval_cases(self, domain: str, n_subjects: int, n_prompts: int, seed: int, n_references: int) -> list[EvalCase]:
        return mini_eval_cases(self.world, domain, n_subjects, n_prompts, seed, n_references=n_references)

    def validation_cases(
        self, domain: str, n_subjects: int, n_prompts: int, seed: int, n_references: int
    ) -> list[EvalCase]:
        """Cases on the held-out validation subjects (every eighth), never in the tables."""
        return mini_eval_cases(self.world, domain, n_subjects, n_prompts, seed, n_references=n_references, part="val")

    def target_images(self, case: EvalCase, seeds: Sequence[int]) -> np.ndarray:
        """True renders of the case's subject in each prompt's context."""
        n = len(case.prompts)
        return self.world.render_batch([case.key] * n, [p.key for p in case.prompts], list(seeds))

    def judge_fidelity(self, case: EvalCase, images: np.ndarray) -> list[dict[str, bool | None]] | None:
        """The fidelity probe's verdicts on images of ``case.prompts``; None when no probe was given."""
        probe = self._load_probe()
        return None if probe is None else probe.judge(self.world, case.key, [p.key for p in case.prompts], images)

    def _load_probe(self) -> FidelityProbe | None:
        if self.fidelity_probe is not None and self._probe is None:
            self._probe = FidelityProbe.from_pretrained(self.fidelity_probe)
        return self._probe

    def assistant_quality(
        self, pipe, turns, cases, eval_clip, eval_dino, face, *, seed: int, target_seeds: int
    ) -> dict:
        return assistant_quality(
            pipe,
            self.world,
            turns,
            cases,
            eval_clip,
            eval_dino,
            face,
            seed=seed,
            target_seeds=target_seeds,
            probe=self._load_probe(),
        )
