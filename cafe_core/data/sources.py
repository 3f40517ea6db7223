"""The one seam through which every stage gets its data: a :class:`DataSource`.

``params.yaml: data`` names a source for training (``data.train``) and one for evaluation
(``data.evaluation``); :func:`cafe_core.workbench.sources.training_source` builds them. Sources:

- ``world`` (:class:`cafe_core.world.source.WorldSource`): CAFE-mini, which has every kind of data
  and the ground truth of every image;
- a folder (:class:`FolderSource`): teacher quadruplets and dialogues in the project's own format,
  which a user with real data (or the sd2 teacher) writes;
- ``dreambench`` (:class:`cafe_core.benchmarks.dreambench.DreamBenchSource`): DreamBench's real
  photos and prompts, for evaluation only.

A source offers what it has; asking it for anything else raises :class:`DataUnavailable`, which
names the source and what was asked, so a stage fails at once with a message instead of deep inside.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .cases import EvalCase
from .dataset import open_dataset
from .dialogues import DialogueSet
from .quadruplets import QuadrupletSet, read_dialogues, read_quadruplets

__all__ = ["DataSource", "DataUnavailable", "DomainSources", "FolderSource"]

logger = logging.getLogger(__name__)

QUADRUPLETS = "quadruplets"
"""The dataset folder of teacher quadruplets inside a :class:`FolderSource`'s folder."""

PARTS = ("fit", "val")
"""The two parts of the assistant's dialogues: fitting, and validation (which chooses lambda)."""


class DataUnavailable(LookupError):
    """A source was asked for data it does not have (e.g. ground-truth renders of real photos)."""


class DataSource:
    """What stages ask their data of. Subclasses implement what they have; the rest raises."""

    name = "data source"
    domains: tuple[str, ...] = ()
    """The evaluation domains this source has cases for (``"object"``, ``"face"``)."""

    def _missing(self, what: str) -> DataUnavailable:
        return DataUnavailable(f"the data source {self.name!r} has no {what}; set params.yaml `data` to one that has")

    # --- training ------------------------------------------------------------------------------

    def quadruplets(self, n: int, *, seed: int, cache_dir: Path | None = None) -> QuadrupletSet:
        """Teacher quadruplets ``(x, instruction, y)`` of training subjects, before any filter."""
        raise self._missing("teacher quadruplets")

    def dialogues(
        self, n: int, *, part: str, seed: int, multi_turn_p: float = 0.0, cache_dir: Path | None = None
    ) -> DialogueSet:
        """The assistant's dialogues of ``part`` (``"fit"`` or ``"val"``, disjoint subjects)."""
        raise self._missing("dialogues")

    def response_fulfils(self, subject_id: int, response: str, valid: Sequence[str]) -> bool | None:
        """Does ``response`` commit to a context among ``valid``? None: this source cannot judge."""
        return None

    def subject_words(self) -> list[str] | None:
        """The class words the training subjects are named by (what the assistant learned to talk
        about), sorted; None where the source does not know them."""
        return None

    # --- evaluation ----------------------------------------------------------------------------

    def eval_cases(self, domain: str, n_subjects: int, n_prompts: int, seed: int, n_references: int) -> list[EvalCase]:
        """Evaluation cases of ``domain``: subjects never seen in training, their photos and prompts."""
        raise self._missing(f"evaluation cases of domain {domain!r}")

    def validation_cases(
        self, domain: str, n_subjects: int, n_prompts: int, seed: int, n_references: int
    ) -> list[EvalCase]:
        """Cases like :meth:`eval_cases` on other unseen subjects, for choosing sampling settings."""
        raise self._missing(f"validation cases of domain {domain!r}")

    def target_images(self, case: EvalCase, seeds: Sequence[int]) -> np.ndarray:
        """Ground-truth images of each prompt of ``case`` (one render seed each): the ceiling row."""
        raise self._missing("ground-truth target images (the real_images and gt_embedding rows need them)")

    def judge_fidelity(self, case: EvalCase, images: np.ndarray) -> list[dict[str, bool | None]] | None:
        """Per image drawn for ``case.prompts`` (one each): is each identity attribute right (None:
        its context hides it), and the context (key ``"context"``)? None: this source cannot judge."""
        return None

    def assistant_quality(self, pipe, turns: list, cases: list[EvalCase], eval_clip, eval_dino, face, **kwargs: Any):
        """Figures that judge the assistant's words and drawings; None when the source cannot judge."""
        return None


class FolderSource(DataSource):
    """Training data a user supplies, in the project's format:

    ``quadruplets/``: a dataset (:mod:`cafe_core.data.dataset`; the README documents its columns),
    e.g. what :func:`~cafe_core.data.quadruplets.write_dataset` or an sd2 teacher writes. G trains
    on the rows every decision keeps; the assistant on those of them that have a dialogue
    (:func:`~cafe_core.data.quadruplets.read_dialogues`), an eighth of their subjects held apart to
    validate it.
    """

    def __init__(self, folder: str | Path, *, scored: str | Path | None = None, name: str | None = None) -> None:
        self.folder = Path(folder)
        self.name = name or str(folder)  # what logs and keys call it: the stages give the project-relative folder
        self.scored = Path(scored) if scored is not None else None
        """The same quadruplets with the filter's decisions (``teacher_data``'s output), which the
        dialogues are read from once it exists: the assistant learns from the kept rows only."""

    def _file(self, name: str) -> Path:
        path = self.folder / name
        if not path.is_file():
            raise DataUnavailable(f"{path} does not exist: the data source {self.name!r} needs it (cafe_core/data/)")
        return path

    def quadruplets(self, n: int, *, seed: int, cache_dir: Path | None = None) -> QuadrupletSet:
        """Every quadruplet of the folder (``n`` and ``seed`` size and seed generated sets only)."""
        quads = read_quadruplets(self._dataset())
        if len(quads) != n:
            logger.info("%s holds %d quadruplets (params asked %d): using all of them", self.name, len(quads), n)
        return quads

    def dialogues(
        self, n: int, *, part: str, seed: int, multi_turn_p: float = 0.0, cache_dir: Path | None = None
    ) -> DialogueSet:
        """Every dialogue of ``part`` in the folder's dataset (``n`` and ``seed`` size and seed generated sets only).
        The ``fit`` part's photos and targets stream (:class:`~cafe_core.data.dataset.ImageRows`): a
        training set of real data may not fit in memory decoded; ``val``'s are decoded."""
        if part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, got {part!r}")
        folder = None
        if self.scored is not None:
            if (self.scored / "manifest.json").is_file():
                folder = self.scored
            else:
                logger.warning(
                    "%s: no filtered dataset at %s yet; the dialogues of every row are used", self.name, self.scored
                )
        return read_dialogues(folder or self._dataset(), part=part, decode=part != "fit")

    def subject_words(self) -> list[str] | None:
        words = {w for w in open_dataset(self._dataset()).column("subject_class") if w}
        return sorted(words) or None

    def _dataset(self) -> Path:
        return self._file(f"{QUADRUPLETS}/manifest.json").parent


class DomainSources(DataSource):
    """Evaluation data from one source per domain (``data.evaluation: {object: dreambench, face:
    faces}``): each question about a domain or a case goes to that domain's source."""

    def __init__(self, sources: dict[str, DataSource]) -> None:
        for domain, source in sources.items():
            if domain not in source.domains:
                raise ValueError(f"the data source {source.name!r} has no {domain!r} cases (it has {source.domains})")
        self.sources = dict(sources)
        self.domains = tuple(sources)
        self.name = ", ".join(f"{d}: {s.name}" for d, s in sources.items())

    def _of(self, domain: str) -> DataSource:
        if domain not in self.sources:
            raise self._missing(f"evaluation cases of domain {domain!r}")
        return self.sources[domain]

    def eval_cases(self, domain: str, n_subjects: int, n_prompts: int, seed: int, n_references: int) -> list[EvalCase]:
        return self._of(domain).eval_cases(domain, n_subjects, n_prompts, seed, n_references)

    def validation_cases(
        self, domain: str, n_subjects: int, n_prompts: int, seed: int, n_references: int
    ) -> list[EvalCase]:
        return self._of(domain).validation_cases(domain, n_subjects, n_prompts, seed, n_references)

    def target_images(self, case: EvalCase, seeds: Sequence[int]) -> np.ndarray:
        return self._of(case.domain).target_images(case, seeds)

    def judge_fidelity(self, case: EvalCase, images: np.ndarray) -> list[dict[str, bool | None]] | None:
        return self._of(case.domain).judge_fidelity(case, images)

    def assistant_quality(self, pipe, turns: list, cases: list[EvalCase], eval_clip, eval_dino, face, **kwargs: Any):
        """The one source's figures when one source holds every case; None across sources (the
        figures are means over all requests, and real photos have nothing to judge words against)."""
        sources = {id(source): source for source in map(self._of, {c.domain for c in cases})}
        if len(sources) != 1:
            return None
        (source,) = sources.values()
        return source.assistant_quality(pipe, turns, cases, eval_clip, eval_dino, face, **kwargs)
