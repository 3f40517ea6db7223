"""The fidelity probe: does a drawing show *this* subject, in the context it was asked for?

CLIP-I and DINO reward copying the photo, and ID sees only faces; the world knows every
image's truth, so CAFE-mini can ask directly. The probe is an evaluation instrument, never used
to train or filter: a transformers ``ViTForImageClassification`` trained with the world's labels
on true renders of *training* subjects, whose one linear head is cut into label groups, one per
identity attribute of a domain (objects: class, colour, pattern, pattern colour; faces: skin
tone, hair colour, hair style, eye colour, face shape) and one for the context (the domain's 25
contexts, or the neutral photo). The groups are the model's ``id2label`` (``"object/colour=red"``),
so a saved probe describes itself.

A context that overrides a detail is not asked about it: a red ball's colour, a sketch's skin
tone, the shape of a "cube shaped" ball (``hidden_groups``); it leaves that image's loss and its
score alike.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..benchmarks.metrics import CONTEXT, all_attributes_right
from ..models.encoders import IMAGENET_MEAN, IMAGENET_STD
from ..workbench import loop as train
from ..workbench.config import FidelityProbeParams
from ..workbench.loop import cosine_lr, set_lr
from .datasets import NEUTRAL, RenderedSet, render_set
from .pretrain import normalize, optimizer_step, random_views, write_image_processor
from .world import ATTRIBUTE_VALUES, CLASSES, DOMAINS, Context, Subject, World

__all__ = [
    "ATTRIBUTES",
    "PROBE_FOLDER",
    "FidelityProbe",
    "LabelGroup",
    "hidden_groups",
    "label_groups",
    "probe_accuracy",
    "train_fidelity_probe",
]

logger = logging.getLogger(__name__)

PROBE_FOLDER = "fidelity_probe"
"""The probe's folder in the world's model root (``models/world/fidelity_probe``)."""

PHOTO = "photo"
"""The context group's value for a plain subject photo."""

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "object": ("class", *ATTRIBUTE_VALUES["object"]),
    "face": tuple(ATTRIBUTE_VALUES["face"]),  # hair style already tells a man from a woman
}
"""The identity attributes the probe judges, per domain."""

_CLASS_REDRAWN = frozenset({"cube_shaped"})
"""Contexts the renderer draws in another shape, whatever the subject's class."""


@dataclass(frozen=True)
class LabelGroup:
    """One question the probe answers: a slice ``[start, start + len(values))`` of its logits."""

    domain: str
    name: str
    values: tuple[str, ...]
    start: int

    @property
    def stop(self) -> int:
        return self.start + len(self.values)


def label_groups(world: World) -> list[LabelGroup]:
    """Every domain's attribute groups, then its context group, in logit order."""
    groups, start = [], 0
    for domain in DOMAINS:
        questions = [(name, _values(domain, name)) for name in ATTRIBUTES[domain]]
        questions.append((CONTEXT, (PHOTO, *(c.name for c in world.contexts(domain)))))
        for name, values in questions:
            groups.append(LabelGroup(domain, name, values, start))
            start += len(values)
    return groups


def _values(domain: str, name: str) -> tuple[str, ...]:
    return CLASSES[domain] if name == "class" else ATTRIBUTE_VALUES[domain][name]


def hidden_groups(world: World, subject: Subject, context: Context | None) -> frozenset[str]:
    """Attributes ``context`` overrides or hides for ``subject``: not asked of its images."""
    hidden = world.hidden_details(subject, context)  # the world's own rule for captions and responses
    if context is not None and context.name in _CLASS_REDRAWN:
        hidden |= {"class"}
    return hidden


def truth(subject: Subject, group: LabelGroup) -> str:
    """The value a true render of ``subject`` shows for an attribute group."""
    return subject.cls if group.name == "class" else subject.attr(group.name)


class FidelityProbe:
    """A trained probe: per image of a known domain, its answer to every group of that domain."""

    def __init__(self, model, image_size: int):
        self.model = model.eval()
        self.image_size = image_size
        self.groups = _groups_from_labels(model.config.id2label)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> FidelityProbe:
        from transformers import ViTForImageClassification

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"no fidelity probe in {folder}: run `dvc repro fidelity_probe` first")
        model = ViTForImageClassification.from_pretrained(folder)
        return cls(model, model.config.image_size)

    def domain_groups(self, domain: str) -> list[LabelGroup]:
        return [g for g in self.groups if g.domain == domain]

    @torch.inference_mode()
    def predict(self, images: np.ndarray, domain: str, batch_size: int = 256) -> dict[str, list[str]]:
        """Images uint8 (N, H, W, 3) of ``domain`` -> ``{group name: N predicted values}``."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(
                f"images must be uint8 (N, {self.image_size}, {self.image_size}, 3), got shape {images.shape}"
            )
        groups = self.domain_groups(domain)
        out: dict[str, list[str]] = {g.name: [] for g in groups}
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
            x = normalize(x.permute(0, 3, 1, 2).float().div_(255.0), IMAGENET_MEAN, IMAGENET_STD)
            logits = self.model(pixel_values=x).logits
            for g in groups:
                out[g.name] += [g.values[int(i)] for i in logits[:, g.start : g.stop].argmax(-1)]
        return out

    def judge(
        self, world: World, subject: Subject, contexts: Sequence[Context | None], images: np.ndarray
    ) -> list[dict[str, bool | None]]:
        """Per image: each attribute right (None where its context hides it) and the context right."""
        predicted = self.predict(images, subject.domain)
        verdicts = []
        for i, context in enumerate(contexts):
            hidden = hidden_groups(world, subject, context)
            verdict: dict[str, bool | None] = {}
            for g in self.domain_groups(subject.domain):
                if g.name == CONTEXT:
                    verdict[CONTEXT] = predicted[CONTEXT][i] == (PHOTO if context is None else context.name)
                else:
                    verdict[g.name] = None if g.name in hidden else predicted[g.name][i] == truth(subject, g)
            verdicts.append(verdict)
        return verdicts


def _groups_from_labels(id2label: dict) -> list[LabelGroup]:
    """The groups back from ``id2label`` (``"<domain>/<group>=<value>"``, in logit order)."""
    groups: list[LabelGroup] = []
    for i in range(len(id2label)):
        head, value = str(id2label[i] if i in id2label else id2label[str(i)]).split("=", 1)
        domain, name = head.split("/", 1)
        if groups and (groups[-1].domain, groups[-1].name) == (domain, name):
            last = groups[-1]
            groups[-1] = LabelGroup(domain, name, (*last.values, value), last.start)
        else:
            groups.append(LabelGroup(domain, name, (value,), i))
    return groups


def _targets(world: World, data: RenderedSet, groups: list[LabelGroup]) -> torch.Tensor:
    """int64 (N, groups): each render's value index per group; -100 where not asked (other domain, hidden)."""
    contexts = {d: world.contexts(d) for d in DOMAINS}
    out = np.full((len(data), len(groups)), -100, np.int64)
    for row in range(len(data)):
        subject = world.subject(int(data.subject_ids[row]))
        cid = int(data.context_ids[row])
        context = None if cid == NEUTRAL else contexts[subject.domain][cid]
        hidden = hidden_groups(world, subject, context)
        for j, g in enumerate(groups):
            if g.domain != subject.domain or g.name in hidden:
                continue
            value = (PHOTO if context is None else context.name) if g.name == CONTEXT else truth(subject, g)
            out[row, j] = g.values.index(value)
    return torch.from_numpy(out)


def probe_loss(logits: torch.Tensor, targets: torch.Tensor, groups: list[LabelGroup]) -> torch.Tensor:
    """Sum over groups of the cross-entropy within each group's slice, over the images it asks."""
    total = logits.new_zeros(())
    for j, g in enumerate(groups):
        y = targets[:, j]
        if (y >= 0).any():
            total = total + F.cross_entropy(logits[:, g.start : g.stop], y, ignore_index=-100)
    return total


def train_fidelity_probe(
    world: World, p: FidelityProbeParams, out: Path, ckpt: Path, *, seed: int, cache_dir: Path | None
) -> dict:
    """Train the probe on ``p.renders`` true renders of training subjects; save it to ``out``.

    Augmented with crops, flips and a little pixel noise, so that it reads a drawing's content
    rather than the exact pixels of the renderer; it never sees a generated image.
    """
    from transformers import ViTConfig, ViTForImageClassification

    groups = label_groups(world)
    data = render_set(world, p.renders, split="train", seed=seed + 1009, cache_dir=cache_dir)
    targets = _targets(world, data, groups)
    labels = [f"{g.domain}/{g.name}={v}" for g in groups for v in g.values]
    size = world.config.image_size
    config = ViTConfig(
        hidden_size=p.hidden_size,
        num_hidden_layers=p.layers,
        num_attention_heads=p.heads,
        intermediate_size=4 * p.hidden_size,
        image_size=size,
        patch_size=p.patch_size,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    torch.manual_seed(p.seed)
    model = ViTForImageClassification(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=0.05)

    def step(i: int) -> dict:
        rng = train.step_generator(p.seed, i)
        gen = train.step_torch_generator(p.seed, i)
        pick = rng.choice(len(data), p.batch_size, replace=False)
        set_lr(opt, cosine_lr(i, p.steps, p.lr))
        x = random_views(data.tensor(pick), gen, scale=(0.8, 1.0))
        x = x + p.noise * torch.randn(x.shape, generator=gen)
        logits = model(pixel_values=normalize(x, IMAGENET_MEAN, IMAGENET_STD)).logits
        return optimizer_step(probe_loss(logits, targets[pick], groups), opt, model.parameters())

    cfg = train.LoopConfig(name="fidelity_probe", steps=p.steps, checkpoint_every=p.checkpoint_every, seed=p.seed)
    stats = train.run_loop(cfg, step, {"model": model}, opt, ckpt)
    model.save_pretrained(out)
    write_image_processor(out, size, IMAGENET_MEAN, IMAGENET_STD, "ViTImageProcessor")
    return stats


def probe_accuracy(probe: FidelityProbe, world: World, n: int, seed: int, cache_dir: Path | None) -> dict:
    """The probe's accuracy per domain and group on ``n`` true renders of held-out subjects.

    What a perfect drawing could score at most: the ceiling every generated figure sits under.
    """
    data = render_set(world, n, split="eval", seed=seed + 2003, cache_dir=cache_dir)
    out: dict[str, dict] = {}
    for d, domain in enumerate(DOMAINS):
        rows = np.flatnonzero(data.domains == d)
        if len(rows) == 0:
            continue
        subjects = [world.subject(int(data.subject_ids[r])) for r in rows]
        contexts = [None if c == NEUTRAL else world.contexts(domain)[c] for c in data.context_ids[rows]]
        per_image: list[dict] = []
        for subject in {s.id: s for s in subjects}.values():  # judge() takes one subject at a time
            mine = [i for i, s in enumerate(subjects) if s.id == subject.id]
            verdicts = probe.judge(world, subject, [contexts[i] for i in mine], data.images[rows[mine]])
            per_image.extend(verdicts)
        groups = {name: [v[name] for v in per_image if v[name] is not None] for name in per_image[0]}
        out[domain] = {
            "images": len(per_image),
            **{name: round(float(np.mean(hits)), 4) for name, hits in groups.items()},
            "all_attributes": round(float(np.mean([all_attributes_right(v) for v in per_image])), 4),
        }
    return out
