"""How every stage draws from G: one place that reads the guidance scales chosen on validation, and
the fast path's references (eq. 4's x_ref) that guidance, self-distillation and the evaluations share.

Apart from :mod:`.evaluate` so that what draws training data (``self_distill``) never depends on the
evaluation's code, nor its skip key on it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ...models.text_to_image import TextToImage
from ...pipeline import CafePipeline, Sampling
from ...utils.digest import config_hash
from ...utils.files import atomic_save_safetensors
from ..config import Params
from ..paths import ProjectPaths
from ..results import read_guidance
from .common import encoder_key

__all__ = ["PromptReferences", "draw_from_prompts", "reference_pipeline", "sampling"]


def sampling(params: Params, root, guidance: str = "both") -> Sampling:
    """How every stage draws from G: ``params.generator``'s scheduler and steps, and the guidance
    scales the stage ``guidance`` chose on validation subjects (``results/guidance/grid.json``)."""
    chosen = read_guidance(root)
    if chosen is None:
        raise FileNotFoundError(
            f"{ProjectPaths(root).guidance_grid} is missing: run `dvc repro guidance` (it chooses s_c and s_d)"
        )
    return dataclasses.replace(Sampling.from_params(params.generator, chosen), guidance=guidance)


class PromptReferences:
    """The base text-to-image model's image of each prompt: eq. 4's ``x_ref``, drawn from the instruction.

    This is how G is evaluated before the assistant exists: the reference carries the
    instruction's semantics, the photo the identity. Each prompt's image is seeded on its own and
    cached (every variant and every subject of a class share them), so it is drawn once per
    experiment; :meth:`save` writes the cache atomically to one safetensors file.
    """

    def __init__(self, t2i: TextToImage, steps: int, cache: Path | None = None):
        self.t2i, self.steps, self.path = t2i, steps, cache
        self.cache: dict[str, np.ndarray] = {}
        if cache is not None and cache.is_file():
            from safetensors.numpy import load_file

            self.cache.update(load_file(cache))

    @classmethod
    def from_params(cls, params: Params, root: Path) -> PromptReferences:
        paths = ProjectPaths(root)
        t2i = TextToImage.from_pretrained(params.profile.text_to_image, model_root=paths.model_root(params.profile))
        key = encoder_key(params, paths, params.profile.text_to_image)
        return cls(t2i, params.generator.sample_steps, cache=paths.references(key))

    def __call__(self, prompts: list[str], seed: int) -> np.ndarray:
        """uint8 (len(prompts), H, W, 3)."""
        keys = [config_hash(p, seed, self.steps) for p in prompts]
        missing = sorted({(k, p) for k, p in zip(keys, prompts) if k not in self.cache})
        if missing:
            seeds = [int(k[:8], 16) for k, _ in missing]
            images = self.t2i([p for _, p in missing], num_inference_steps=self.steps, seed=seeds)
            self.cache.update({k: img for (k, _), img in zip(missing, images)})
        return np.stack([self.cache[k] for k in keys])

    def save(self) -> None:
        if self.path is not None and self.cache:
            atomic_save_safetensors({k: np.ascontiguousarray(v) for k, v in self.cache.items()}, self.path)


def reference_pipeline(params: Params, root: Path, generator: str, seed: int, guidance: str = "both") -> CafePipeline:
    """The fast path of training seed ``seed`` of G ``generator`` on the CPU, sampling with ``guidance``."""
    pipe = CafePipeline.from_params(params, root, assistant=None, generator=generator, seed=seed, device="cpu")
    pipe.sampling = sampling(params, root, guidance)
    return pipe


def draw_from_prompts(
    pipe: CafePipeline, references: PromptReferences, photo, prompts: list[str], seed: int
) -> np.ndarray:
    """G(E_c(x_ref of each prompt), E_d(photo)): one image per prompt, the batch's noise from ``seed``."""
    refs = references(prompts, seed)
    return pipe.generate(photo, refs, seed=torch.Generator().manual_seed(seed))[0]
