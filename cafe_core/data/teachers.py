"""Teachers: what makes a target ``y`` from a subject photo ``x`` and an instruction (paper 3.2).

Every teacher answers :meth:`Teacher.make` the same way (requests in, a target and what is known
of it out), so the dataset stage, the filter and self-distillation do not care which one ran. CAFE-mini's is the world's
(:class:`cafe_core.world.teacher.Teacher`, with the failure modes the filter must catch). For real
photos, :class:`IPAdapterTeacher`.

Why IP-Adapter: the paper's teacher, ProFusion, tunes on every subject for about 30 seconds and
has no diffusers port. A tuning-free subject-driven generator that diffusers keeps is the
nearest stand-in: IP-Adapter (``pipe.load_ip_adapter``) conditions any Stable Diffusion pipeline
on the photo's CLIP image embedding (the "plus" and "face" variants keep more identity), and its
weights exist for SD 1.5 and SDXL. BLIP-Diffusion (``BlipDiffusionPipeline``) was the other
choice; it has one checkpoint, on SD 1.5, and diffusers no longer develops it. The teacher is a
different model from G (it only makes targets), as ProFusion is in the paper.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["IPAdapterTeacher", "Teacher", "TeacherRequest", "TeacherTarget"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class TeacherRequest:
    """Draw the subject of ``x`` as ``instruction`` says, with ``seed``."""

    x: np.ndarray
    """uint8 (H, W, 3): the subject photo."""
    instruction: str
    seed: int
    subject: str | None = None
    """The subject's id where the data knows it (a world teacher draws from it, not from x)."""
    context: str | None = None
    """The instruction's context where the data knows it."""


@dataclass(frozen=True, eq=False)
class TeacherTarget:
    y: np.ndarray
    """uint8 (H, W, 3): the target."""
    truth: dict | None = None
    """What y really shows, where the teacher knows it (a world's ground truth; graders only)."""


@runtime_checkable
class Teacher(Protocol):
    """Makes targets; ``name`` and ``version`` go into every row's provenance."""

    name: str
    version: str

    def make(self, requests: Sequence[TeacherRequest]) -> list[TeacherTarget]:
        """One target per request, in order."""
        ...


class IPAdapterTeacher:
    """A diffusers text-to-image pipeline with an IP-Adapter: the subject photo is the image prompt,
    the instruction the text prompt (``ip_adapter_scale`` weighs the photo against the text)."""

    name = "ip-adapter"

    def __init__(
        self,
        pipe: Any,
        *,
        version: str,
        ip_adapter_scale: float = 0.6,
        num_inference_steps: int = 30,
        guidance_scale: float = 7.5,
        negative_prompt: str | None = "lowres, blurry, deformed",
    ) -> None:
        if not 0.0 <= ip_adapter_scale <= 1.5:
            raise ValueError(f"ip_adapter_scale must lie in [0, 1.5], got {ip_adapter_scale}")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if getattr(pipe, "image_encoder", None) is None:
            raise ValueError("the pipeline has no IP-Adapter image encoder: call pipe.load_ip_adapter(...) first")
        self.pipe = pipe
        self.version = f"{version} scale={ip_adapter_scale} steps={num_inference_steps} cfg={guidance_scale}"
        self.ip_adapter_scale = ip_adapter_scale
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.negative_prompt = negative_prompt
        pipe.set_ip_adapter_scale(ip_adapter_scale)
        pipe.set_progress_bar_config(disable=True)

    @classmethod
    def from_pretrained(
        cls,
        base: str,
        ip_adapter: str,
        *,
        subfolder: str = "models",
        weight_name: str = "ip-adapter_sd15.safetensors",
        image_encoder_folder: str = "image_encoder",
        torch_dtype: Any = None,
        device: str | None = None,
        **kwargs: Any,
    ) -> IPAdapterTeacher:
        """Load ``base`` (a Stable Diffusion repo id or folder) and the IP-Adapter in ``ip_adapter``
        (h94/IP-Adapter's layout: ``models/<weight_name>``, ``models/image_encoder``)."""
        from diffusers import AutoPipelineForText2Image

        pipe = AutoPipelineForText2Image.from_pretrained(base, torch_dtype=torch_dtype, safety_checker=None)
        pipe.load_ip_adapter(
            ip_adapter, subfolder=subfolder, weight_name=weight_name, image_encoder_folder=image_encoder_folder
        )
        if device is not None:
            pipe.to(device)
        return cls(pipe, version=f"{base} + {ip_adapter}/{subfolder}/{weight_name}", **kwargs)

    def make(self, requests: Sequence[TeacherRequest]) -> list[TeacherTarget]:
        """One call of the pipeline per request (each has its own photo, which diffusers' batched
        ``ip_adapter_image`` does not take); targets at the pipeline's resolution, truth unknown."""
        import torch
        from PIL import Image

        out = []
        for request in requests:
            image = self.pipe(
                prompt=request.instruction,
                negative_prompt=self.negative_prompt,
                ip_adapter_image=Image.fromarray(np.asarray(request.x, dtype=np.uint8)),
                num_inference_steps=self.num_inference_steps,
                guidance_scale=self.guidance_scale,
                generator=torch.Generator(self.pipe.device).manual_seed(int(request.seed)),
                output_type="np",
            ).images[0]
            out.append(TeacherTarget(y=(np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)))
        return out
