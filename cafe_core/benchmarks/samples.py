"""Generations in the layout DreamBench++'s harness reads, and scoring any folder in it.

A method's samples folder holds three trees with the same relative names::

    samples/<method>/src_image/<subject>/<prompt>_<k>.png   the reference photo that conditioned the image
    samples/<method>/tgt_image/<subject>/<prompt>_<k>.png   the generated image
    samples/<method>/text/<subject>/<prompt>_<k>.txt        the prompt CLIP-T is measured against

as DreamBench++ (Peng et al. 2024) lays out a method's outputs: each generation is compared with
*one* reference photo, the one it was conditioned on (CAFE and Kosmos-G take one photo; DreamBooth's
DINO averages over every photo of the subject instead, :mod:`cafe_core.benchmarks.metrics`).
:func:`score_samples` reads any folder in this layout, CAFE's or a peer's, and writes
``scores.jsonl`` (one line per image) and ``summary.json`` beside the trees, so two methods are
compared on the same protocol with the same evaluation encoders. Faces also get ID (the faces
protocol's identity score): CAFE's evaluation names a face subject's folder ``face-<person>``, and
a peer's faces folder is scored as faces throughout (``faces=True``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch.nn.functional as F
from PIL import Image

from ..utils.files import atomic_write_json, atomic_write_text
from ..utils.images import IMAGE_SUFFIXES, load_image

__all__ = ["IMAGE_SUFFIXES", "Sample", "read_samples", "score_samples", "write_samples"]

SRC, TGT, TEXT = "src_image", "tgt_image", "text"
SCORES, SUMMARY = "scores.jsonl", "summary.json"
FACE_PREFIX = "face-"
"""How CAFE's evaluation names a face subject's folder (``<domain>-<subject>``)."""


@dataclass(frozen=True)
class Sample:
    """One generation: its key (``<subject>/<prompt>_<k>``), reference photo, image and prompt."""

    key: str
    source: Path
    target: Path
    text: str

    @property
    def subject(self) -> str:
        return self.key.split("/")[0]


def write_samples(
    folder: str | os.PathLike,
    items: Iterable[tuple[str, int, int, np.ndarray | Image.Image, np.ndarray | Image.Image, str]],
) -> Path:
    """Write ``(subject, prompt index, k, reference photo, generated image, prompt)`` items as a
    samples folder (the module's layout); returns ``folder``."""
    folder = Path(folder)
    for subject, prompt, k, source, target, text in items:
        key = f"{subject}/{prompt:03d}_{k}"
        for tree, image in ((SRC, source), (TGT, target)):
            path = folder / tree / f"{key}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            (image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))).save(path)
        atomic_write_text(folder / TEXT / f"{key}.txt", text)
    return folder


def read_samples(folder: str | os.PathLike) -> list[Sample]:
    """The samples of a folder in the layout, matched by relative name; a generated image without its
    reference photo or prompt, or the reverse, is an error that names it."""
    folder = Path(folder)
    trees = {tree: folder / tree for tree in (SRC, TGT, TEXT)}
    missing = [str(path) for path in trees.values() if not path.is_dir()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a samples folder: it lacks {', '.join(missing)}")

    def keyed(tree: str, suffixes: Sequence[str]) -> dict[str, Path]:
        files = (p for p in trees[tree].rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        return {p.relative_to(trees[tree]).with_suffix("").as_posix(): p for p in files}

    sources, targets, texts = keyed(SRC, IMAGE_SUFFIXES), keyed(TGT, IMAGE_SUFFIXES), keyed(TEXT, (".txt",))
    unmatched = sorted(set(targets) ^ set(sources) | set(targets) ^ set(texts))
    if unmatched:
        raise ValueError(
            f"{folder}: {len(unmatched)} names lack their {SRC}, {TGT} or {TEXT} file, e.g. {unmatched[:3]}"
        )
    if not targets:
        raise ValueError(f"{folder}: no image in {trees[TGT]}")
    return [Sample(k, sources[k], targets[k], texts[k].read_text().strip()) for k in sorted(targets)]


def score_samples(
    folder: str | os.PathLike, eval_clip, eval_dino, *, face=None, faces: bool | None = None, batch_size: int = 32
) -> dict:
    """Score every sample of ``folder`` (any method's) and write ``scores.jsonl`` and ``summary.json``.

    Per image: DINO (CLS cosine of generated image and its reference photo, ``eval_dino``), CLIP-I
    (the same with ``eval_clip``'s image embeddings) and CLIP-T (cosine of the generated image and
    its prompt); and, given a face embedder ``face``, ID (the same with ``face``) for the face
    samples: those whose subject is named ``face-...`` (``faces=None``), every one (``True``) or
    none (``False``). The summary holds their means, overall and per subject, and the image count.
    """
    folder = Path(folder)
    samples = read_samples(folder)
    sources = [np.asarray(load_image(s.source)) for s in samples]
    targets = [np.asarray(load_image(s.target)) for s in samples]
    dino = F.cosine_similarity(
        eval_dino.cls_embeds(sources, batch_size=batch_size), eval_dino.cls_embeds(targets, batch_size=batch_size)
    )
    target_clip = eval_clip.image_embeds(targets, batch_size=batch_size)
    clip_i = F.cosine_similarity(eval_clip.image_embeds(sources, batch_size=batch_size), target_clip)
    clip_t = F.cosine_similarity(eval_clip.text_embeds([s.text for s in samples]), target_clip)
    rows = [
        {"key": s.key, "subject": s.subject, "DINO": float(d), "CLIP-I": float(i), "CLIP-T": float(t)}
        for s, d, i, t in zip(samples, dino, clip_i, clip_t, strict=True)
    ]
    is_face = [faces if faces is not None else s.subject.startswith(FACE_PREFIX) for s in samples]
    if face is not None and any(is_face):
        at = [k for k, f in enumerate(is_face) if f]
        identity = F.cosine_similarity(
            face.embed([sources[k] for k in at], batch_size=batch_size).float(),
            face.embed([targets[k] for k in at], batch_size=batch_size).float(),
        )
        for k, value in zip(at, identity, strict=True):
            rows[k]["ID"] = float(value)
    atomic_write_text(folder / SCORES, "".join(json.dumps(r) + "\n" for r in rows))
    metrics = ("DINO", "CLIP-I", "CLIP-T", "ID")

    def means(chosen: list[dict]) -> dict:
        return {m: float(np.mean(v)) for m in metrics if (v := [r[m] for r in chosen if m in r])}

    subjects = sorted({r["subject"] for r in rows})
    summary = {
        "images": len(rows),
        "subjects": len(subjects),
        **means(rows),
        "per_subject": {s: means([r for r in rows if r["subject"] == s]) for s in subjects},
        "protocol": "each image against the one reference photo that conditioned it (DreamBench++ layout)",
    }
    atomic_write_json(folder / SUMMARY, summary)
    return summary
