"""DreamBench (DreamBooth's benchmark, paper section 4): its subjects, photos and prompts, and CAFE's phrasing.

DreamBench has 30 subjects with 4-6 real photos each and 25 prompts per subject: live subjects
(the 9 cats and dogs) get the live-subject prompts, the 21 objects the object prompts.
:func:`load_dreambench` reads the published folder; the metrics are in
:mod:`cafe_core.benchmarks.metrics`, the result tables in :mod:`cafe_core.benchmarks.tables`.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.cases import EvalCase, EvalPrompt, cafe_prompt
from ..data.sources import DataSource
from ..utils.images import IMAGE_SUFFIXES, image_files, load_image

__all__ = [
    "LIVE_CLASSES",
    "BenchSubject",
    "DreamBench",
    "DreamBenchSource",
    "cafe_request",
    "dreambench_root",
    "load_dreambench",
]

logger = logging.getLogger(__name__)

ENV_VAR = "CAFE_DREAMBENCH"
PROMPTS_FILE = "prompts_and_classes.txt"
LIVE_CLASSES = frozenset({"cat", "dog"})
"""Classes of DreamBench's live subjects (pets), which get the live-subject prompt list."""

_TEMPLATE_RE = re.compile(r"'([^'\n]*\{0\} \{1\}[^'\n]*)'\s*\.format")
_SUBJECT_SLOT = "{0} {1}"


# --- reading DreamBench ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchSubject:
    """One DreamBench subject: its folder name, class word and real photos."""

    name: str
    cls: str
    """Class word of the prompts, e.g. ``"dog"`` or ``"stuffed animal"``."""
    live: bool
    """Live subjects (cats and dogs) get the live-subject prompts; objects the object prompts."""
    images: tuple[Path, ...]

    def load_images(self) -> list[Image.Image]:
        """The real photos as RGB images (the references of DINO and CLIP-I)."""
        return [load_image(path) for path in self.images]


@dataclass(frozen=True)
class DreamBench:
    """The parsed benchmark: subjects in folder order and the two prompt-template lists."""

    root: Path
    subjects: tuple[BenchSubject, ...]
    object_templates: tuple[str, ...]
    """Templates with DreamBooth's slots, e.g. ``"a {0} {1} in the jungle"`` ({0}: unique token, {1}: class)."""
    live_templates: tuple[str, ...]

    def subject(self, name: str) -> BenchSubject:
        """The subject whose folder is ``name``, e.g. ``"dog"``."""
        for subject in self.subjects:
            if subject.name == name:
                return subject
        raise KeyError(f"DreamBench has no subject {name!r}; known: {', '.join(s.name for s in self.subjects)}")

    def prompts(self, subject: BenchSubject | str) -> list[str]:
        """The evaluation prompts without the unique token, e.g. ``"a dog in the jungle"``.

        These are the prompts CLIP-T is computed against, for every method alike.
        """
        subject = self._resolve(subject)
        return [template.replace(_SUBJECT_SLOT, subject.cls) for template in self._templates(subject)]

    def cafe_prompts(self, subject: BenchSubject | str, rng: np.random.Generator) -> list[str]:
        """The same prompts as CAFE is asked them, in one of :data:`~cafe_core.data.cases.CAFE_PROMPT_FORMS` at random.

        See :func:`cafe_request` for how a prompt becomes a request about "this" subject.
        """
        subject = self._resolve(subject)
        return [cafe_prompt(cafe_request(template, subject.cls), rng) for template in self._templates(subject)]

    def _templates(self, subject: BenchSubject) -> tuple[str, ...]:
        return self.live_templates if subject.live else self.object_templates

    def _resolve(self, subject: BenchSubject | str) -> BenchSubject:
        return self.subject(subject) if isinstance(subject, str) else subject


def dreambench_root(project_root: str | os.PathLike[str] | None = None) -> Path:
    """Where DreamBench lies (resolved): ``$CAFE_DREAMBENCH`` if set, else ``<project_root>/../shared/dreambench``.

    The dataset is shared, read-only data beside the checkout, never copied into it.
    ``project_root`` defaults to the folder that holds ``cafe_core``.

    Raises:
        FileNotFoundError: the folder does not exist; the message names where it looked.
    """
    if os.environ.get(ENV_VAR):
        root, source = Path(os.environ[ENV_VAR]).expanduser(), f"${ENV_VAR}"
    else:
        project = Path(project_root) if project_root is not None else Path(__file__).resolve().parents[2]
        root, source = project.resolve().parent / "shared" / "dreambench", "the project's ../shared folder"
    if not root.is_dir():
        raise FileNotFoundError(
            f"DreamBench not found at {root} (from {source}). Put the dataset's folder there, "
            f"or point ${ENV_VAR} at it."
        )
    return root.resolve()  # one spelling whatever symbolic links lead there


def load_dreambench(root: str | os.PathLike[str] | None = None) -> DreamBench:
    """Read DreamBench's classes, prompt templates and photo paths (photos are not decoded).

    ``root`` defaults to :func:`dreambench_root`. The prompt lists are parsed from the quoted
    templates of ``prompts_and_classes.txt``, never executed.

    Raises:
        FileNotFoundError: the root, its prompts file, or a subject's folder is missing.
        ValueError: the prompts file lacks a section, or a subject folder holds no photo.
    """
    root = Path(root) if root is not None else dreambench_root()
    path = root / PROMPTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is {root} a DreamBench folder?")
    text = path.read_text(encoding="utf-8")
    classes = _parse_classes(text, path)
    object_templates = _parse_templates(_section(text, "Object Prompts", "Live Subject Prompts", path), path)
    live_templates = _parse_templates(_section(text, "Live Subject Prompts", None, path), path)
    subjects = tuple(
        BenchSubject(name, cls, cls in LIVE_CLASSES, _photos(root / name)) for name, cls in sorted(classes.items())
    )
    logger.info(
        "DreamBench at %s: %d subjects (%d live), %d photos",
        root,
        len(subjects),
        sum(s.live for s in subjects),
        sum(len(s.images) for s in subjects),
    )
    return DreamBench(root, subjects, object_templates, live_templates)


def _parse_classes(text: str, path: Path) -> dict[str, str]:
    """The ``subject_name,class`` CSV block, up to the first blank line after its header."""
    start = text.find("subject_name,class")
    if start < 0:
        raise ValueError(f"{path} has no 'subject_name,class' table")
    block = text[start:].split("\n\n", 1)[0]
    rows = csv.DictReader(io.StringIO(block))
    classes = {row["subject_name"].strip(): row["class"].strip() for row in rows}
    if not classes:
        raise ValueError(f"{path}: the 'subject_name,class' table is empty")
    return classes


def _section(text: str, title: str, next_title: str | None, path: Path) -> str:
    """The text between the line ``title`` and the line ``next_title`` (or the end)."""
    match = re.search(rf"^{re.escape(title)}\s*$", text, flags=re.MULTILINE)
    if match is None:
        raise ValueError(f"{path} has no '{title}' section")
    end = text.find(f"\n{next_title}", match.end()) if next_title else -1
    return text[match.end() : end if end >= 0 else None]


def _parse_templates(section: str, path: Path) -> tuple[str, ...]:
    templates = tuple(_TEMPLATE_RE.findall(section))
    if not templates:
        raise ValueError(f"{path}: found no prompt templates like 'a {{0}} {{1}} ...'.format(...) in a section")
    return templates


def _photos(folder: Path) -> tuple[Path, ...]:
    if not folder.is_dir():
        raise FileNotFoundError(f"DreamBench subject folder {folder} does not exist")
    photos = tuple(image_files(folder))
    if not photos:
        raise ValueError(f"DreamBench subject folder {folder} holds no photos ({', '.join(IMAGE_SUFFIXES)})")
    return photos


# --- CAFE's phrasing ------------------------------------------------------------------------------


def cafe_request(template: str, cls: str) -> str:
    """A DreamBench template as a request about *this* subject.

    The article that introduces the subject becomes "this": "a {0} {1} in the jungle" ->
    "this dog in the jungle". When words stand between the article and the subject, they become
    a version of it: "a red {0} {1}" -> "a red version of this dog" (the wording the CAFE-mini
    world uses for property changes), which keeps the class word and reads naturally in both forms.
    """
    head, slot, tail = template.partition(_SUBJECT_SLOT)
    if not slot or not head.startswith("a "):
        raise ValueError(f"expected a template like 'a [words] {_SUBJECT_SLOT} [words]', got {template!r}")
    modifiers = head[2:].strip()
    return f"a {modifiers} version of this {cls}{tail}" if modifiers else f"this {cls}{tail}"


class DreamBenchSource(DataSource):
    """DreamBench as the evaluation data of the stages (``params.yaml: data.evaluation: dreambench``).

    Every subject is one case of domain ``object`` (DreamBench has no faces): its first photo is the
    input, all its photos are the references of DINO and CLIP-I, and its prompts are asked in CAFE's
    phrasing while CLIP-T scores the original prompt. There is no ground truth to draw a ceiling row.
    """

    name = "dreambench"
    domains = ("object",)

    def __init__(self, bench: DreamBench | None = None) -> None:
        self.bench = bench or load_dreambench()

    def eval_cases(self, domain: str, n_subjects: int, n_prompts: int, seed: int, n_references: int) -> list[EvalCase]:
        """The first ``n_subjects`` subjects (folder order) with their first ``n_prompts`` prompts.

        ``n_references`` is not used: DreamBench's protocol compares with every photo of a subject.
        """
        if domain not in self.domains:
            raise self._missing(f"evaluation cases of domain {domain!r}")
        subjects = self.bench.subjects
        if not 1 <= n_subjects <= len(subjects) or not 1 <= n_prompts <= len(self.bench.object_templates):
            raise ValueError(
                f"DreamBench has {len(subjects)} subjects and 25 prompts each, got {n_subjects} and {n_prompts}"
            )
        rng = np.random.default_rng(seed)
        cases = []
        for subject in subjects[:n_subjects]:
            originals = self.bench.prompts(subject)[:n_prompts]
            asked = self.bench.cafe_prompts(subject, rng)[:n_prompts]
            prompts = [EvalPrompt(o, a, o) for o, a in zip(originals, asked)]
            cases.append(EvalCase(subject.name, "object", subject.load_images(), prompts, key=subject))
        return cases
