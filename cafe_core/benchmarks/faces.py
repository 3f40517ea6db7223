"""The faces protocol (paper section 4, after E4T and ProFusion): a folder of people's photos and prompts.

The paper evaluates faces on E4T's 7 researcher photos with 23 prompts, 10 images each, scoring
CLIP-T with CLIP ViT-B/32 and identity (ID) with a face-recognition model. Those photos are not
redistributed, so the protocol reads any folder laid out as::

    faces/
      prompts.txt        # one prompt per line, "{}" where the person goes: "a photo of {} as a chef"
      ada.jpg            # a person with one photo (as E4T's), or
      grace/1.jpg ...    # a person with several: the first (by name) is the input, all are ID's references

CLIP-T scores the prompt with "a person" in the slot, as for every method; CAFE is asked for
"this person" in one of the paper's two phrasings (:data:`~cafe_core.data.cases.CAFE_PROMPT_FORMS`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..data.cases import EvalCase, EvalPrompt, cafe_prompt
from ..data.sources import DataSource
from ..utils.images import IMAGE_SUFFIXES, image_files, load_image

__all__ = ["PROMPTS_FILE", "FaceFolderSource", "read_face_prompts"]

logger = logging.getLogger(__name__)

PROMPTS_FILE = "prompts.txt"
SLOT = "{}"
PLAIN_SUBJECT = "a person"
"""What fills the slot in the prompt CLIP-T scores (every method's images are scored against it)."""
ASKED_SUBJECT = "this person"
"""What fills it in the request CAFE is given with the photo."""


def read_face_prompts(path: str | os.PathLike[str]) -> list[str]:
    """The templates of ``prompts.txt``: non-blank lines, each with exactly one ``{}``.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: a line has no slot or several, or the file has no prompt.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: a faces folder needs {PROMPTS_FILE} (cafe_core.benchmarks.faces)"
        )
    templates = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if line.count(SLOT) != 1:
            raise ValueError(f"{path}:{number}: a prompt needs exactly one {SLOT} where the person goes, got {line!r}")
        templates.append(line)
    if not templates:
        raise ValueError(f"{path} holds no prompt")
    return templates


class FaceFolderSource(DataSource):
    """A faces folder as evaluation data of domain ``face`` (``params.yaml: data.evaluation:
    {face: <key>}``, the key naming the folder in ``data.folders``). Real photos: no ground truth,
    so no ceiling row and no probe verdicts."""

    domains = ("face",)

    def __init__(self, folder: str | os.PathLike[str], *, name: str | None = None) -> None:
        """``name``: what evaluations are keyed by (default: ``folder``); the stages give the
        project-relative folder, so moving the project keeps its evaluations."""
        self.folder = Path(folder)
        self.name = name or str(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(
                f"faces folder {self.folder} does not exist: put people's photos and {PROMPTS_FILE} there "
                "(cafe_core.benchmarks.faces), or evaluate without faces (data.evaluation: dreambench)"
            )
        self.templates = read_face_prompts(self.folder / PROMPTS_FILE)
        self.people = self._people()

    def _people(self) -> dict[str, list[Path]]:
        people: dict[str, list[Path]] = {}
        for entry in sorted(self.folder.iterdir()):
            if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
                people[entry.stem] = [entry]
            elif entry.is_dir():
                photos = image_files(entry)
                if photos:
                    people[entry.name] = photos
        if not people:
            raise ValueError(f"faces folder {self.folder} holds no photo ({', '.join(IMAGE_SUFFIXES)})")
        return people

    def eval_cases(self, domain: str, n_subjects: int, n_prompts: int, seed: int, n_references: int) -> list[EvalCase]:
        """The first ``n_subjects`` people (by name) with the first ``n_prompts`` prompts each, or
        every prompt where the folder has fewer (``evaluation.prompts`` may be one count for both domains).

        ``n_references`` is not used: ID compares with every photo of a person.
        """
        if domain not in self.domains:
            raise self._missing(f"evaluation cases of domain {domain!r}")
        if not 1 <= n_subjects <= len(self.people) or n_prompts < 1:
            raise ValueError(
                f"faces folder {self.folder} has {len(self.people)} people, got {n_subjects} "
                f"(params.yaml evaluation.face_subjects) and {n_prompts} prompts"
            )
        if n_prompts > len(self.templates):
            logger.info(
                "faces folder %s has %d prompts: all of them, not %d", self.folder, len(self.templates), n_prompts
            )
        rng = np.random.default_rng(seed)
        cases = []
        for name, photos in list(self.people.items())[:n_subjects]:
            prompts = [
                EvalPrompt(
                    t.replace(SLOT, PLAIN_SUBJECT),
                    cafe_prompt(t.replace(SLOT, ASKED_SUBJECT), rng),
                    t.replace(SLOT, "…"),
                )
                for t in self.templates[:n_prompts]
            ]
            cases.append(EvalCase(name, "face", [load_image(p) for p in photos], prompts, key=name))
        logger.info("faces folder %s: %d people, %d prompts each", self.folder, len(cases), n_prompts)
        return cases
