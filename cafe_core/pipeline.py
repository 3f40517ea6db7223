"""Chat to image: the assistant M, the frozen encoders and G behind one call (paper, figure 2).

A turn: CLIP patch features and DINO patch tokens of the photo (computed once per photo and
kept while the user chats about it), the assistant's greedy response and ``c_hat`` read at
``[GEN]``, then G samples from ``(c_hat, d)``. The fast path skips the assistant: ``c`` is the
CLIP embedding of a reference image the user gives. The same class runs the mini world and
the real SD2 / Llama-2 stack; only the checkpoints differ.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline

from .models.guidance import blend_embeddings, check_reference_weights, guidance_mode, mix_embeddings
from .utils.digest import photo_digest
from .utils.errors import ArgumentError, check_count

__all__ = ["OUTPUT_TYPES", "CafePipeline", "CafePipelineOutput", "ChatResult", "Sampling", "check_sampling"]

OUTPUT_TYPES = ("pil", "np", "pt")

Photo = Any  # a path, a PIL image, or uint8 (H, W, 3)


@dataclass(frozen=True)
class Sampling:
    """How G samples: scheduler, steps and the two guidance scales of eq. 1's branches."""

    steps: int = 25
    scheduler: str = "ddim"
    clip_scale: float = 3.0
    dino_scale: float = 3.0
    guidance: str = "both"

    @classmethod
    def from_params(cls, g, chosen: dict | None = None) -> Sampling:
        """``params.generator``'s settings; ``chosen`` (``{"clip_scale", "dino_scale"}``) replaces its scales."""
        scales = (chosen["clip_scale"], chosen["dino_scale"]) if chosen else (g.clip_scale, g.dino_scale)
        return cls(g.sample_steps, g.scheduler, *scales)


@dataclass
class ChatResult:
    """One assistant turn: what it said, what it drew, and where the time went."""

    response: str
    images: np.ndarray  # uint8 (N, H, W, 3)
    embedding: torch.Tensor  # c_hat, (clip_dim,): the predicted CLIP embedding G drew from
    history: list[dict]  # the chat including this turn: pass it back for the next one
    timings: dict[str, float] = field(default_factory=dict)  # seconds: encoders, llm, diffusion, total


@dataclass
class CafePipelineOutput:
    """What :meth:`CafePipeline.__call__` returns (diffusers' ``images`` first, then CAFE's own)."""

    images: Any  # list of PIL images, float (N, H, W, 3) in [0, 1], or a float (N, 3, H, W) tensor (output_type)
    response: str | None  # the assistant's answer (None when no prompt was given)
    embedding: torch.Tensor  # c, (clip_dim,): the CLIP embedding G drew from
    history: list[dict] | None  # the chat including this turn (None without a prompt)
    timings: dict[str, float] = field(default_factory=dict)  # seconds: encoders, llm, diffusion, total

    def __iter__(self):  # `images, response, ... = pipe(...)` and `pipe(...)[0]` as diffusers' outputs allow
        return iter((self.images, self.response, self.embedding, self.history, self.timings))

    def __getitem__(self, index: int):
        return tuple(self)[index]


class _Clock:
    """Wall-clock seconds per part; synchronises CUDA so a part is charged for its own kernels."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds = device, {}

    @contextlib.contextmanager
    def part(self, name: str):
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _as_array(photo: Photo) -> np.ndarray:
    """uint8 (H, W, 3) from a path (checked and decoded by `images.load_image`), a PIL image or an array."""
    from PIL import Image

    from .utils.images import load_image

    if isinstance(photo, (str, os.PathLike)):
        photo = load_image(photo)
    if isinstance(photo, Image.Image):
        photo = np.asarray(photo.convert("RGB"))
    array = np.asarray(photo)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"a photo must be uint8 (H, W, 3), got {array.dtype} {tuple(array.shape)}")
    return array


def _require(marker: Path, stage: str) -> None:
    if not marker.is_file():
        raise FileNotFoundError(f"{marker.parent} holds no trained model: build it with `dvc repro {stage}`")


class CafePipeline(DiffusionPipeline):
    """Assistant ``M`` + conditioning CLIP ``E_c`` + DINO ``E_d`` + generator ``G``, as a diffusers pipeline.

    Components (each a diffusers or transformers class, so ``save_pretrained`` / ``from_pretrained``
    of the whole system, ``.to()``, progress bars and CPU offload come from ``DiffusionPipeline``):

    - ``unet``, ``scheduler``, ``vae`` (None in pixel space): G's pretrained text-to-image parts;
      ``unet`` is saved as a plain diffusers UNet.
    - ``conditioning``: :class:`~cafe_core.models.conditioning.CafeConditioning`, what eq. 1 adds to
      the UNet (installed into its cross-attention layers when the pipeline is built).
    - ``image_encoder`` (``CLIPModel``) + ``feature_extractor``: ``E_c``; ``dino_encoder``
      (``Dinov2Model``) + ``dino_processor``: ``E_d``.
    - ``language_model`` + ``tokenizer`` + ``assistant_head``
      (:class:`~cafe_core.models.assistant_head.CafeAssistantHead`: V, H, [GEN]): the assistant M;
      all three None for the fast path alone.

    ``sampling`` (a :class:`Sampling` or its dict), ``max_new_tokens`` and ``reference_weight`` (eq. 4's
    lambda when a call gives references without weights) are saved in ``model_index.json``.
    The CAFE model classes behind the call are views sharing these components' weights:
    :attr:`generator` (``CafeGenerator``), :attr:`clip`, :attr:`dino` and :attr:`assistant`.
    """

    model_cpu_offload_seq = "language_model->unet->vae"
    _optional_components = ["vae", "language_model", "tokenizer", "assistant_head"]
    # Small beside the LM and the UNet, and called through methods other than forward (which is
    # where accelerate's offload hooks sit): they stay on the execution device.
    _exclude_from_cpu_offload = ["image_encoder", "dino_encoder", "conditioning", "assistant_head"]

    def __init__(
        self,
        unet,
        scheduler,
        conditioning,
        image_encoder,
        feature_extractor,
        dino_encoder,
        dino_processor,
        vae=None,
        language_model=None,
        tokenizer=None,
        assistant_head=None,
        sampling: Sampling | dict | None = None,
        max_new_tokens: int = 64,
        reference_weight: float = 0.5,
    ):
        from .models.assistant import CafeAssistant
        from .models.encoders import ClipEncoder, DinoEncoder, ImageTransform
        from .models.generator import CafeGenerator

        super().__init__()
        parts = (language_model, tokenizer, assistant_head)
        if any(p is None for p in parts) and any(p is not None for p in parts):
            raise ValueError("language_model, tokenizer and assistant_head come together (or none: the fast path)")
        self.register_modules(
            unet=unet,
            scheduler=scheduler,
            conditioning=conditioning,
            image_encoder=image_encoder,
            feature_extractor=feature_extractor,
            dino_encoder=dino_encoder,
            dino_processor=dino_processor,
            vae=vae,
            language_model=language_model,
            tokenizer=tokenizer,
            assistant_head=assistant_head,
        )
        sampling = sampling if isinstance(sampling, dict) else asdict(sampling or Sampling())
        check_reference_weights([reference_weight], 1, with_c_hat=True)
        self.register_to_config(
            sampling=asdict(Sampling(**sampling)),
            max_new_tokens=int(max_new_tokens),
            reference_weight=float(reference_weight),
        )
        self.generator = CafeGenerator(unet, scheduler, conditioning.conditioning_config, vae, conditioning)
        vision = image_encoder.config.vision_config
        self.clip = ClipEncoder(
            image_encoder, None, ImageTransform.from_config(feature_extractor.to_dict(), default_size=vision.image_size)
        )
        self.dino = DinoEncoder(
            dino_encoder,
            ImageTransform.from_config(
                dino_processor.to_dict(),
                default_size=dino_encoder.config.image_size,
                default_mean=DinoEncoder.default_mean,
                default_std=DinoEncoder.default_std,
            ),
        )
        self.assistant = None
        if language_model is not None:
            self.assistant = CafeAssistant(language_model, tokenizer, assistant_head.assistant_config, assistant_head)
        self._photo_key: str | None = None
        self._photo_features: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def sampling(self) -> Sampling:
        """How G samples when the call names no knob (saved in ``model_index.json``)."""
        return Sampling(**self.config.sampling)

    @sampling.setter
    def sampling(self, value: Sampling) -> None:
        self.register_to_config(sampling=asdict(value))

    @property
    def max_new_tokens(self) -> int:
        return self.config.max_new_tokens

    @classmethod
    def from_parts(
        cls,
        assistant,
        clip,
        dino,
        generator,
        sampling: Sampling | None = None,
        max_new_tokens: int = 64,
        reference_weight: float = 0.5,
    ) -> CafePipeline:
        """The pipeline of CAFE model objects (an assistant being trained, tiny test parts ...):
        their weights become the components, shared, not copied. ``assistant=None``: the fast path."""
        lm = {}
        if assistant is not None:
            lm = {"language_model": assistant.lm, "tokenizer": assistant.tokenizer, "assistant_head": assistant.head}
        return cls(
            unet=generator.unet,
            scheduler=generator.scheduler,
            conditioning=generator.conditioning,
            vae=generator.vae,
            image_encoder=clip.model,
            feature_extractor=clip.image_processor(),
            dino_encoder=dino.model,
            dino_processor=dino.image_processor(),
            sampling=sampling,
            max_new_tokens=max_new_tokens,
            reference_weight=reference_weight,
            **lm,
        )

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """diffusers' ``save_pretrained``, with the UNet written as a plain diffusers UNet: the CAFE
        processors' weights are the ``conditioning`` component's, reinstalled when it loads."""
        from .models.attention import without_cafe_attention

        with without_cafe_attention(self.unet):
            super().save_pretrained(save_directory, **kwargs)

    @classmethod
    def from_params(
        cls,
        params,
        root: str | os.PathLike,
        *,
        assistant: str | None = "mse",
        generator: str | None = None,
        seed: int | None = None,
        device: str | torch.device | None = None,
    ) -> CafePipeline:
        """The profile's checkpoints, the trained assistant ``models/assistant/<assistant>/seed-<seed>``
        and generator ``models/generator/<generator>/seed-<seed>`` (default: the one the assistant
        was validated with; ``seed`` defaults to the first of ``params.seeds``), drawing with the
        guidance scales chosen on validation where the stage ``guidance`` has run.
        ``assistant=None`` loads no language model: the fast path alone.
        On CUDA the frozen LM, encoders and G load in bf16; V, H and [GEN] stay float32."""
        from .models.assistant import CafeAssistant
        from .models.encoders import ClipEncoder, DinoEncoder
        from .models.generator import CafeGenerator
        from .workbench.paths import ProjectPaths
        from .workbench.results import read_guidance

        paths = ProjectPaths(root)
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        model_root = paths.model_root(params.profile)
        if assistant is not None and assistant not in params.assistants:
            raise KeyError(
                f"unknown assistant {assistant!r} (params.yaml key 'assistants'); known: {', '.join(params.assistants)}"
            )
        if generator is None:  # the assistant's own G, else the full system's
            system = params.assistants[assistant] if assistant else params.variants[params.fidelity.variant]
            generator = system.generator
        if generator not in params.generators:
            raise KeyError(
                f"unknown generator {generator!r} (params.yaml key 'generators'); known: {', '.join(params.generators)}"
            )
        seed = params.seeds[0] if seed is None else seed
        if seed not in params.seeds:
            raise KeyError(f"training seed {seed} is not one of params.yaml `seeds` {params.seeds}")
        spec = params.generators[generator]
        gen_dir = paths.generator(generator, seed)
        _require(gen_dir / "cafe_generator.json", f"train_generator@{generator}")
        lm = None
        if assistant is not None:
            trained = paths.assistant(assistant, seed)
            _require(trained / "assistant_config.json", f"train_assistant@{assistant}")
            lm = CafeAssistant.from_pretrained(
                params.profile.lm, trained, model_root=model_root, device=device, dtype=dtype
            )
        return cls.from_parts(
            lm,
            ClipEncoder.from_pretrained(
                params.profile.encoder(spec.clip), model_root=model_root, device=device, dtype=dtype
            ),
            DinoEncoder.from_pretrained(
                params.profile.encoder(spec.dino), model_root=model_root, device=device, dtype=dtype
            ),
            CafeGenerator.from_pretrained(gen_dir, device=device, dtype=dtype),
            Sampling.from_params(params.generator, read_guidance(root)),
            max_new_tokens=params.assistant.max_new_tokens,
            reference_weight=params.selfdistill.lam,
        )

    @property
    def device(self) -> torch.device:
        return self.generator.device

    # --- features ---------------------------------------------------------------------------------

    def photo_features(self, photo: Photo) -> tuple[torch.Tensor, torch.Tensor]:
        """(CLIP patch features (P, patch_dim), DINO patch tokens (N, dino_dim)) of one photo.

        The last photo's features are kept: every turn of a chat about it reuses them.
        """
        array = _as_array(photo)
        key = photo_digest(array)
        if key != self._photo_key:
            patches = self.clip.patch_features(array[None])[0]
            d = self.dino.patch_tokens(array[None])[0]
            self._photo_key, self._photo_features = key, (patches, d)
        return self._photo_features

    # --- turns ------------------------------------------------------------------------------------

    @torch.inference_mode()
    def respond(
        self, photos: list[Photo], chats: list[list[dict]], *, seed: int | list[int] = 0, num_images: int = 1
    ) -> tuple[list[str], torch.Tensor, np.ndarray, dict[str, float]]:
        """A batch of turns: photo i with chat i (ending in the user's message).

        Returns (responses, c_hat (B, clip_dim), images (B * num_images, H, W, 3), seconds per part);
        images of turn i are rows ``i * num_images ... (i + 1) * num_images - 1``.
        """
        if self.assistant is None:
            raise RuntimeError("this pipeline has no assistant (it was loaded for the fast path): use generate()")
        if len(photos) != len(chats):
            raise ValueError(f"{len(photos)} photos but {len(chats)} chats")
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        for chat in chats:
            if not chat or chat[-1].get("role") != "user":
                raise ValueError("each chat must end with the user's message")
        clock = _Clock(self.device)
        with clock.part("encoders"):
            features = [self.photo_features(p) for p in photos]
            patches = torch.stack([f[0] for f in features])
            d = torch.stack([f[1] for f in features])
        with clock.part("llm"):
            prompts = [self.assistant.encode_prompt(chat) for chat in chats]
            texts, c_hat = self.assistant.generate(prompts, patches, max_new_tokens=self.max_new_tokens)
        images = self._draw(c_hat, d, seed, num_images, clock)
        return texts, c_hat.float().cpu(), images, clock.seconds

    @torch.inference_mode()
    def predict(self, photos: list[Photo], chats: list[list[dict]]) -> tuple[list[str], torch.Tensor]:
        """The assistant alone, for a batch of turns: (responses, c_hat (B, clip_dim)); nothing is
        drawn. Self-distillation blends c_hat with a reference (eq. 4) before :meth:`draw`."""
        if self.assistant is None:
            raise RuntimeError("this pipeline has no assistant (it was loaded for the fast path): use generate()")
        if len(photos) != len(chats):
            raise ValueError(f"{len(photos)} photos but {len(chats)} chats")
        patches = self.clip.patch_features(np.stack([_as_array(p) for p in photos]))
        prompts = [self.assistant.encode_prompt(chat) for chat in chats]
        texts, c_hat = self.assistant.generate(prompts, patches, max_new_tokens=self.max_new_tokens)
        return texts, c_hat.float().cpu()

    @torch.inference_mode()
    def draw(self, c: torch.Tensor, photos: list[Photo], *, seed: int | list[int] = 0) -> np.ndarray:
        """G alone: image i from ``c[i]`` (B, clip_dim) and the DINO tokens of ``photos[i]``; uint8 (B, H, W, 3)."""
        if len(c) != len(photos):
            raise ValueError(f"{len(c)} embeddings but {len(photos)} photos")
        d = self.dino.patch_tokens(np.stack([_as_array(p) for p in photos]))
        return self._draw(c.to(d), d, seed, 1, _Clock(self.device))

    def chat(
        self,
        image: Photo,
        message: str,
        history: list[dict] | None = None,
        *,
        seed: int = 0,
        num_images: int = 1,
    ) -> ChatResult:
        """One turn of a chat about ``image``; ``history`` is the previous result's ``history``.

        The photo stays the subject of every turn (its DINO tokens condition G and its CLIP
        patches sit at ``<image>`` in the first user message), so "now make it snowy" redraws
        the same subject in a new context.
        """
        if not isinstance(message, str) or not message.strip():
            raise ValueError("message must be a non-empty string")
        history = [dict(m) for m in (history or [])]
        chat = history + [{"role": "user", "content": message.strip()}]
        start = time.perf_counter()
        texts, c_hat, images, seconds = self.respond([image], [chat], seed=seed, num_images=num_images)
        seconds["total"] = time.perf_counter() - start
        history = chat + [{"role": "assistant", "content": texts[0]}]
        return ChatResult(texts[0], images, c_hat[0], history, seconds)

    # --- the diffusers-style call ------------------------------------------------------------------

    @torch.inference_mode()
    def __call__(
        self,
        image: Photo | list[Photo] | None = None,
        prompt: str | None = None,
        *,
        history: list[dict] | None = None,
        reference_images: Photo | list[Photo] | None = None,
        reference_weights: float | list[float] | None = None,
        c_hat: torch.Tensor | None = None,
        reference_embeds: torch.Tensor | None = None,
        dino_embeds: torch.Tensor | None = None,
        clip_scale: float | None = None,
        dino_scale: float | None = None,
        guidance: str | None = None,
        num_inference_steps: int | None = None,
        scheduler: str | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        num_images_per_prompt: int = 1,
        output_type: str = "pil",
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: tuple[str, ...] = ("latents",),
        return_dict: bool = True,
    ) -> CafePipelineOutput | tuple:
        """Draw the subject of ``image``: what the assistant makes of ``prompt``, blended with references.

        Args:
            image: the subject's photo (path, PIL image or uint8 (H, W, 3)), or several photos of
                one subject: G reads all their DINO tokens, concatenated, each photo a share of one
                photo's attention; the assistant sees the first.
            prompt: the user's message; the assistant answers it and predicts ``c_hat``.
            history: the previous turns (a previous output's ``history``) for a multi-turn chat.
            reference_images: zero or more images whose CLIP embeddings blend into ``c`` (eq. 4):
                ``c = (1 - sum w_i) c_hat + sum w_i E_c(ref_i)``.
            reference_weights: one weight per reference, each in [0, 1], summing to at most 1 beside
                ``c_hat``; default: 0.5 shared equally. Without ``c_hat`` (no prompt) they are relative.
            c_hat: (clip_dim,) a precomputed prediction, in place of the assistant (no prompt needed).
            reference_embeds: (R, clip_dim) precomputed ``E_c`` of the references (diffusers'
                ``ip_adapter_image_embeds`` slot), in place of ``reference_images``.
            dino_embeds: (N, dino_dim) or (K, N, dino_dim) precomputed DINO tokens of the photo(s).
            clip_scale: s_c, how strongly G draws what ``c`` describes (default: the chosen one).
            dino_scale: s_d, how faithfully G keeps the photo's subject (default: the chosen one).
            guidance: ``both`` (default), ``clip_only`` or ``dino_only``.
            num_inference_steps, scheduler: the sampler (defaults: the pipeline's ``sampling``).
            generator: a torch.Generator for the starting noise; or ``seed``: image j uses ``seed + j``
                (default 0: the same call draws the same images).
            num_images_per_prompt: images to draw.
            output_type: ``pil`` (list of PIL images), ``np`` (float (N, H, W, 3) in [0, 1]) or ``pt``
                (float (N, 3, H, W) in [0, 1]).
            callback_on_step_end: ``f(pipe, step_index, timestep, callback_kwargs) -> dict`` after each
                denoising step (diffusers' convention); ``callback_kwargs`` holds the tensors named
                in ``callback_on_step_end_tensor_inputs`` (``latents``), and a returned ``latents``
                replaces them.
            return_dict: False returns ``(images, response, embedding, history, timings)``.

        Returns:
            :class:`CafePipelineOutput`.
        """
        s = self.sampling
        clip_scale = s.clip_scale if clip_scale is None else clip_scale
        dino_scale = s.dino_scale if dino_scale is None else dino_scale
        steps = s.steps if num_inference_steps is None else num_inference_steps
        self._check_call(
            prompt,
            c_hat,
            clip_scale,
            dino_scale,
            steps,
            num_images_per_prompt,
            output_type,
            generator,
            seed,
            callback_on_step_end_tensor_inputs,
        )
        mode = guidance or s.guidance
        check_sampling(scheduler=scheduler, guidance=mode)
        photos = [] if image is None else list(image) if isinstance(image, (list, tuple)) else [image]
        references = self._references(reference_images, reference_embeds)
        weights = self._weights(reference_weights, len(references), base=prompt is not None or c_hat is not None)
        clock, start = _Clock(self.device), time.perf_counter()
        response, new_history = None, None
        with clock.part("encoders"):
            d = self._dino_tokens(photos, dino_embeds)
            if isinstance(references, list) and references:
                references = self.clip.image_embeds(np.stack([_as_array(r) for r in references]))
        if prompt is not None:
            if not photos:
                raise ValueError("image is required with a prompt: the assistant reads the photo")
            chat = [dict(m) for m in (history or [])] + [{"role": "user", "content": prompt.strip()}]
            with clock.part("llm"):
                patches = self.photo_features(photos[0])[0][None]
                texts, predicted = self.assistant.generate(
                    [self.assistant.encode_prompt(chat)], patches, max_new_tokens=self.max_new_tokens
                )
            response, c_hat = texts[0], predicted[0]
            new_history = chat + [{"role": "assistant", "content": response}]
        c = self._condition(c_hat, references, weights, mode, d)
        callback = None
        if callback_on_step_end is not None:

            def callback(i: int, t: torch.Tensor, tensors: dict) -> dict | None:
                return callback_on_step_end(self, i, t, {k: tensors[k] for k in callback_on_step_end_tensor_inputs})

        first = 0 if seed is None else seed
        noise = generator if generator is not None else [first + j for j in range(num_images_per_prompt)]
        with clock.part("diffusion"):
            images = self.generator.generate(
                c[None].expand(num_images_per_prompt, -1),
                d[None].expand(num_images_per_prompt, *d.shape),
                guidance=mode,
                clip_scale=clip_scale,
                dino_scale=dino_scale,
                num_inference_steps=steps,
                scheduler=scheduler or s.scheduler,
                seed=noise,
                callback_on_step_end=callback,
                progress_bar=self.progress_bar,
            )
        clock.seconds["total"] = time.perf_counter() - start
        out = CafePipelineOutput(_convert(images, output_type), response, c.float().cpu(), new_history, clock.seconds)
        return out if return_dict else tuple(out)

    def scale_grid(
        self,
        image: Photo | list[Photo],
        prompt: str | None = None,
        *,
        clip_scales: tuple[float, ...] = (0.0, 1.5, 3.0, 5.0, 7.0),
        dino_scales: tuple[float, ...] = (0.0, 1.5, 3.0, 5.0),
        seed: int = 0,
        **kwargs,
    ) -> np.ndarray:
        """The two knobs side by side on the user's photo: uint8 (len(clip_scales), len(dino_scales), H, W, 3).

        Cell (i, j) is drawn at ``clip_scale=clip_scales[i]``, ``dino_scale=dino_scales[j]`` from one
        starting noise (``seed``), so only the knobs differ. s_c (rows) says how strongly to draw what
        was asked; s_d (columns) how faithfully to keep the photo's subject. The assistant answers
        ``prompt`` once; ``kwargs`` go to the call (references, steps, scheduler ...).
        """
        if not clip_scales or not dino_scales:
            raise ValueError("clip_scales and dino_scales must each name at least one scale")
        check_sampling(clip_scale=min(clip_scales), dino_scale=min(dino_scales))
        if prompt is not None:
            photo = image[0] if isinstance(image, (list, tuple)) else image
            kwargs["c_hat"] = self.predict([photo], [[{"role": "user", "content": prompt}]])[1][0]
        rows = []
        for s_c in clip_scales:
            cells = [
                self(image, clip_scale=s_c, dino_scale=s_d, seed=seed, output_type="np", **kwargs).images[0]
                for s_d in dino_scales
            ]
            rows.append(np.stack(cells))
        return np.round(np.stack(rows) * 255).astype(np.uint8)

    def _check_call(
        self, prompt, c_hat, clip_scale, dino_scale, steps, num_images, output_type, generator, seed, tensor_inputs
    ) -> None:
        """Every argument checked by name before any model runs."""
        check_sampling(clip_scale=clip_scale, dino_scale=dino_scale, num_inference_steps=steps)
        check_count("num_images_per_prompt", num_images)
        if output_type not in OUTPUT_TYPES:
            raise ArgumentError("output_type", f"must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if generator is not None and seed is not None:
            raise ValueError("pass generator or seed, not both")
        if prompt is not None and not (isinstance(prompt, str) and prompt.strip()):
            raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
        if prompt is not None and c_hat is not None:
            raise ValueError("pass prompt (the assistant predicts c_hat) or c_hat, not both")
        if prompt is not None and self.assistant is None:
            raise ValueError("this pipeline has no assistant (loaded for the fast path): pass c_hat or references")
        unknown = set(tensor_inputs) - {"latents"}
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs: only 'latents' is available, got {sorted(unknown)}")

    def _references(self, images, embeds) -> list | torch.Tensor:
        """The references as photos to encode (a list) or precomputed embeddings (R, clip_dim)."""
        if images is not None and embeds is not None:
            raise ValueError("pass reference_images or reference_embeds, not both")
        if embeds is not None:
            embeds = torch.as_tensor(embeds, dtype=torch.float32)
            embeds = embeds[None] if embeds.ndim == 1 else embeds
            if embeds.ndim != 2 or embeds.shape[-1] != self.generator.config.clip_dim:
                raise ValueError(
                    f"reference_embeds must be (R, {self.generator.config.clip_dim}), got {tuple(embeds.shape)}"
                )
            return embeds
        if images is None:
            return []
        return list(images) if isinstance(images, (list, tuple)) else [images]

    def _weights(self, weights, count: int, *, base: bool) -> list[float]:
        """The references' weights: as given (checked), else the pipeline's ``reference_weight`` shared
        equally beside ``c_hat`` (all of it, relative, without)."""
        if weights is None:
            if count == 0:
                return []
            share = self.config.reference_weight if base else 1.0
            return [share / count] * count
        weights = [weights] if isinstance(weights, (int, float)) else list(weights)
        return check_reference_weights(weights, count, with_c_hat=base)

    def _dino_tokens(self, photos: list, embeds) -> torch.Tensor:
        """(N, dino_dim) for one photo, (K, N, dino_dim) for several: from the photos or precomputed."""
        if embeds is not None:
            if photos and len(photos) > 1:
                raise ValueError("pass several photos or dino_embeds, not both")
            d = torch.as_tensor(embeds).to(self.device)
            cfg = self.generator.config
            if d.ndim not in (2, 3) or d.shape[-2:] != (cfg.dino_tokens, cfg.dino_dim):
                raise ValueError(
                    f"dino_embeds must be ({cfg.dino_tokens}, {cfg.dino_dim}) or (K, {cfg.dino_tokens}, "
                    f"{cfg.dino_dim}), got {tuple(d.shape)}"
                )
            return d
        if not photos:
            raise ValueError("image is required: the photo of the subject to draw (or pass dino_embeds)")
        if len(photos) == 1:
            return self.photo_features(photos[0])[1]
        return self.dino.patch_tokens(np.stack([_as_array(p) for p in photos]))

    def _condition(self, c_hat, references, weights, mode: str, d: torch.Tensor) -> torch.Tensor:
        """c of eq. 4 with several references; zeros where the guidance reads no c (``dino_only``)."""
        if c_hat is not None:
            c_hat = torch.as_tensor(c_hat, dtype=torch.float32).reshape(-1)
            if c_hat.shape[0] != self.generator.config.clip_dim:
                raise ValueError(f"c_hat must be ({self.generator.config.clip_dim},), got {tuple(c_hat.shape)}")
        if references is None or len(references) == 0:
            if c_hat is not None:
                return c_hat.to(d.device)
            if mode == "dino_only":
                return torch.zeros(self.generator.config.clip_dim, device=d.device)
            raise ValueError("nothing says what to draw: give a prompt, c_hat, or reference_images")
        return mix_embeddings(c_hat, references.float(), weights).to(d.device)

    @torch.inference_mode()
    def generate(
        self,
        image: Photo,
        reference: Photo,
        *,
        seed: int | list[int] | torch.Generator = 0,
        num_images: int = 1,
        c_hat: torch.Tensor | None = None,
        blend: float = 1.0,
        guidance: str | None = None,
    ) -> tuple[np.ndarray, dict[str, float]]:
        """The fast path: ``c = E_c(reference)``, ``d = E_d(image)``; no language model.

        ``reference`` is one image or a batch (a list, or uint8 (R, H, W, 3)): one draw each.
        ``seed``: an int gives image j the seed ``seed + j``; a list, one seed per reference; a
        ``torch.Generator`` draws the whole batch's starting noise from it (diffusers' ``generator``).
        ``guidance`` overrides the pipeline's guidance mode (``Sampling.guidance``).

        With ``c_hat`` (an assistant's prediction) ``c`` is eq. 4's blend
        ``(1 - blend) c_hat + blend E_c(reference)``; ``blend=1`` is the reference alone.
        """
        if guidance is not None:
            guidance_mode(guidance)  # a clear error for an unknown mode, before any work
        clock = _Clock(self.device)
        start = time.perf_counter()
        references = reference if isinstance(reference, (list, tuple)) or np.ndim(reference) == 4 else [reference]
        with clock.part("encoders"):
            _, d = self.photo_features(image)
            c = self.clip.image_embeds(np.stack([_as_array(r) for r in references])).float()
            if c_hat is not None:
                c = blend_embeddings(c_hat.reshape(1, -1).to(c), c, blend)
        images = self._draw(c, d[None].expand(len(c), *d.shape), seed, num_images, clock, guidance=guidance)
        clock.seconds["total"] = time.perf_counter() - start
        return images, clock.seconds

    def _draw(
        self,
        c: torch.Tensor,
        d: torch.Tensor,
        seed: int | list[int] | torch.Generator,
        num_images: int,
        clock: _Clock,
        guidance: str | None = None,
    ) -> np.ndarray:
        s = self.sampling
        if isinstance(seed, torch.Generator):
            seeds = seed
        elif isinstance(seed, int):  # image j of the batch gets seed + j
            seeds = [seed + j for j in range(len(c) * num_images)]
        else:
            if len(seed) != len(c):
                raise ValueError(f"got {len(seed)} seeds for {len(c)} turns")
            seeds = [int(x) + k for x in seed for k in range(num_images)]
        with clock.part("diffusion"):
            return self.generator.generate(
                c.repeat_interleave(num_images, 0),
                d.repeat_interleave(num_images, 0),
                guidance=guidance or s.guidance,
                clip_scale=s.clip_scale,
                dino_scale=s.dino_scale,
                num_inference_steps=s.steps,
                scheduler=s.scheduler,
                seed=seeds,
            )


def check_sampling(
    *,
    clip_scale: float | None = None,
    dino_scale: float | None = None,
    num_inference_steps: int | None = None,
    scheduler: str | None = None,
    guidance: str | None = None,
) -> None:
    """An :class:`~cafe_core.utils.errors.ArgumentError` naming the first bad sampling argument (None:
    not given, not checked); the CLI calls it before any model loads, the call before it draws."""
    from .models.text_to_image import SCHEDULERS

    for name, value in (("clip_scale", clip_scale), ("dino_scale", dino_scale)):
        if value is not None and not (isinstance(value, (int, float)) and value >= 0):
            raise ArgumentError(name, f"must be a number >= 0, got {value!r}")
    if num_inference_steps is not None:
        check_count("num_inference_steps", num_inference_steps)
    if scheduler is not None and scheduler not in SCHEDULERS:
        raise ArgumentError("scheduler", f"must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
    if guidance is not None:
        guidance_mode(guidance)


def _convert(images: np.ndarray, output_type: str):
    """uint8 (N, H, W, 3) -> diffusers' output types."""
    if output_type == "pil":
        from PIL import Image

        return [Image.fromarray(image) for image in images]
    array = images.astype(np.float32) / 255.0
    return array if output_type == "np" else torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()
