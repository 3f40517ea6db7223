"""The DreamBench evaluation protocol (paper section 4): data, prompts, metrics and result tables.

DreamBench (DreamBooth's benchmark) has 30 subjects with 4-6 real photos each and 25 prompts
per subject: live subjects (the 9 cats and dogs) get the live-subject prompts, the 21 objects
the object prompts. The same protocol runs on two scales:

- the real one, read from the published folder by :func:`load_dreambench`;
- CAFE-mini, where :func:`mini_eval_cases` builds the same kind of cases from the world's
  held-out subjects, with rendered "real photos" and the world's DreamBench-style contexts.

Metrics follow DreamBooth: DINO and CLIP-I compare every generated image with every real photo
of its subject, CLIP-T compares each generated image with its *original* prompt (the one without
CAFE's chat phrasing, as the paper does for a fair comparison), and ID is the face protocol's
identity similarity. :func:`write_table` writes the ablation tables every target ends in.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .encoders import ClipEncoder, DinoEncoder, IdentityEmbedder, Images
from .files import atomic_write_text
from .images import load_image
from .world import Context, Subject, World

__all__ = [
    "CAFE_PROMPT_FORMS",
    "COLUMNS",
    "LIVE_CLASSES",
    "BenchSubject",
    "DreamBench",
    "EvalCase",
    "EvalPrompt",
    "ProtocolRow",
    "cafe_prompt",
    "cafe_request",
    "clip_i_similarity",
    "clip_t_similarity",
    "dino_similarity",
    "dreambench_root",
    "identity_similarity",
    "load_dreambench",
    "mini_eval_cases",
    "write_table",
]

logger = logging.getLogger(__name__)

ENV_VAR = "CAFE_DREAMBENCH"
PROMPTS_FILE = "prompts_and_classes.txt"
LIVE_CLASSES = frozenset({"cat", "dog"})
"""Classes of DreamBench's live subjects (pets), which get the live-subject prompt list."""

CAFE_PROMPT_FORMS = ("Can you generate an image for {}?", "Generate an image for {}.")
"""The paper's two phrasings of a DreamBench prompt for CAFE, picked at random per prompt."""

COLUMNS = ("variant", "domain", "DINO", "CLIP-I", "CLIP-T", "ID")
"""Columns of every protocol table, in order."""

_PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
_TEMPLATE_RE = re.compile(r"'([^'\n]*\{0\} \{1\}[^'\n]*)'\s*\.format")
_SUBJECT_SLOT = "{0} {1}"


# ----------------------------------------------------------------------------- reading DreamBench


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
        """The same prompts as CAFE is asked them, in one of :data:`CAFE_PROMPT_FORMS` at random.

        See :func:`cafe_request` for how a prompt becomes a request about "this" subject.
        """
        subject = self._resolve(subject)
        return [cafe_prompt(cafe_request(template, subject.cls), rng) for template in self._templates(subject)]

    def _templates(self, subject: BenchSubject) -> tuple[str, ...]:
        return self.live_templates if subject.live else self.object_templates

    def _resolve(self, subject: BenchSubject | str) -> BenchSubject:
        return self.subject(subject) if isinstance(subject, str) else subject


def dreambench_root(project_root: str | os.PathLike[str] | None = None) -> Path:
    """Where DreamBench lies: ``$CAFE_DREAMBENCH`` if set, else ``<project_root>/../shared/dreambench``.

    The dataset is shared, read-only data beside the checkout, never copied into it.
    ``project_root`` defaults to the folder that holds ``cafe_core``.

    Raises:
        FileNotFoundError: the folder does not exist; the message names where it looked.
    """
    if os.environ.get(ENV_VAR):
        root, source = Path(os.environ[ENV_VAR]).expanduser(), f"${ENV_VAR}"
    else:
        project = Path(project_root) if project_root is not None else Path(__file__).resolve().parents[1]
        root, source = project.resolve().parent / "shared" / "dreambench", "the project's ../shared folder"
    if not root.is_dir():
        raise FileNotFoundError(
            f"DreamBench not found at {root} (from {source}). Put the dataset's folder there, "
            f"or point ${ENV_VAR} at it."
        )
    return root


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
    photos = tuple(sorted(p for p in folder.iterdir() if p.suffix.lower() in _PHOTO_SUFFIXES and p.is_file()))
    if not photos:
        raise ValueError(f"DreamBench subject folder {folder} holds no photos ({', '.join(sorted(_PHOTO_SUFFIXES))})")
    return photos


# ----------------------------------------------------------------------------- CAFE's phrasing


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


def cafe_prompt(request: str, rng: np.random.Generator) -> str:
    """Wrap a request ("this dog on the beach") in one of the paper's two forms, chosen with ``rng``."""
    return CAFE_PROMPT_FORMS[int(rng.integers(len(CAFE_PROMPT_FORMS)))].format(request)


# ----------------------------------------------------------------------------- metrics


def dino_similarity(dino: DinoEncoder, generated: Images, references: Images, *, batch_size: int = 32) -> float:
    """DINO: mean cosine similarity of DINO CLS embeddings, generated vs real photos.

    DreamBooth's protocol: every generated image is compared with every real photo of its
    subject, and all pairs are averaged (the mean over generated images of their mean over
    references, since every image has the same number of references).
    """
    return _mean_pairwise_cosine(
        dino.cls_embeds(generated, batch_size=batch_size), dino.cls_embeds(references, batch_size=batch_size)
    )


def clip_i_similarity(clip: ClipEncoder, generated: Images, references: Images, *, batch_size: int = 32) -> float:
    """CLIP-I: as :func:`dino_similarity`, with CLIP image embeddings."""
    return _mean_pairwise_cosine(
        clip.image_embeds(generated, batch_size=batch_size), clip.image_embeds(references, batch_size=batch_size)
    )


def clip_t_similarity(clip: ClipEncoder, generated: Images, prompts: Sequence[str], *, batch_size: int = 32) -> float:
    """CLIP-T: mean cosine similarity between each generated image and its own original prompt.

    ``prompts[i]`` is the prompt of ``generated[i]``: the plain DreamBench prompt ("a dog in the
    jungle"), not the chat phrasing CAFE was given.
    """
    images = clip.image_embeds(generated, batch_size=batch_size)
    if len(prompts) != len(images):
        raise ValueError(
            f"CLIP-T needs one prompt per generated image: got {len(images)} images, {len(prompts)} prompts"
        )
    texts = clip.text_embeds(list(prompts), batch_size=batch_size)
    return F.cosine_similarity(images.float(), texts.float(), dim=-1).mean().item()


def identity_similarity(
    face: IdentityEmbedder, generated: Images, references: Images, *, batch_size: int = 32
) -> float:
    """ID: as :func:`dino_similarity`, with a face-recognition embedder (the face protocol's metric)."""
    return _mean_pairwise_cosine(
        face.embed(generated, batch_size=batch_size), face.embed(references, batch_size=batch_size)
    )


def _mean_pairwise_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine similarity over all (row of ``a``, row of ``b``) pairs."""
    a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    return (a @ b.T).mean().item()


# ----------------------------------------------------------------------------- result tables


@dataclass(frozen=True)
class ProtocolRow:
    """One line of a protocol table: a model variant's scores on one domain (``None``: not measured)."""

    variant: str
    domain: str
    DINO: float | None = None
    CLIP_I: float | None = None
    CLIP_T: float | None = None
    ID: float | None = None

    def to_dict(self) -> dict[str, str | float | None]:
        """The row keyed by :data:`COLUMNS` (``CLIP-I`` rather than the attribute name ``CLIP_I``)."""
        return dict(zip(COLUMNS, (getattr(self, f.name) for f in fields(self)), strict=True))


def write_table(rows: Sequence[ProtocolRow], folder: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``table.csv`` and ``table.md`` into ``folder`` atomically; return their paths.

    Scores have 3 decimals; unmeasured ones are empty cells, so a reader never mistakes a
    missing metric for a zero.
    """
    folder = Path(folder)
    cells = [[_cell(value) for value in row.to_dict().values()] for row in rows]
    csv_text = io.StringIO()
    csv.writer(csv_text, lineterminator="\n").writerows([COLUMNS, *cells])
    markdown = [_md_line(COLUMNS), _md_line(["---"] * len(COLUMNS)), *(_md_line(line) for line in cells)]
    return (
        atomic_write_text(folder / "table.csv", csv_text.getvalue()),
        atomic_write_text(folder / "table.md", "\n".join(markdown) + "\n"),
    )


def _cell(value: str | float | None) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else f"{value:.3f}"


def _md_line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


# ----------------------------------------------------------------------------- CAFE-mini cases


class EvalPrompt(NamedTuple):
    """One prompt of a case: the world context, the plain prompt (CLIP-T's text) and CAFE's phrasing."""

    context: Context
    prompt: str
    cafe_prompt: str


@dataclass(frozen=True, eq=False)  # compared by identity: == on the image array has no single truth value
class EvalCase:
    """A held-out subject with its "real photos" and prompts: the mini counterpart of a DreamBench subject."""

    subject: Subject
    reference_images: np.ndarray
    """uint8 (R, H, W, 3) neutral photos with distinct render seeds; the first is the input photo x."""
    prompts: list[EvalPrompt]

    @property
    def input_image(self) -> np.ndarray:
        """The photo the assistant is given (uint8, (H, W, 3))."""
        return self.reference_images[0]


def mini_eval_cases(
    world: World, domain: str, n_subjects: int, n_prompts: int, seed: int, *, n_references: int = 4
) -> list[EvalCase]:
    """DreamBench-style cases on ``n_subjects`` held-out subjects of ``domain``.

    Subjects come from the eval split only (tuning-free means unseen subjects) and keep world
    order. Every case shares the same ``n_prompts`` contexts, so per-subject scores compare;
    ``n_prompts=len(world.contexts(domain))`` (25) is the full protocol. Each subject gets its own
    render seeds, so no two subjects share a scene. Everything is fixed by ``seed``.
    """
    rng = np.random.default_rng(seed)
    subjects = world.subjects(domain, "eval")
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
        EvalPrompt(context, world.prompt(subject, context), cafe_prompt(world.request(subject, context), rng))
        for context in contexts
    ]
    return EvalCase(subject, photos, prompts)


def _check_count(name: str, value: int, available: int) -> None:
    if not 1 <= value <= available:
        raise ValueError(f"{name} must be between 1 and {available}, got {value}")
