"""Seconds per chat turn of CAFE at the sd2 profile's full size: random weights, bf16, one GPU.

Prints a table and writes a JSON file.

    scripts/gpu/run_sd2_benchmark.sh                                      # on the GPU machine
    bin/with-env python scripts/gpu/benchmark_sd2.py --device cpu --tiny  # the same wiring, tiny widths, on a CPU

Builds the sd2 profile's models from the published configurations in `cafe_core.models.reference`, with random weights
(no checkpoint is read or downloaded): E_c CLIP ViT-L/14-336, E_d DINOv2-giant, M = Llama-2-13B-chat with CAFE's
V, H and [GEN], and G = the SD2-base UNet and VAE read through CAFE's CLIP and DINO tokens. They go into the same
`CafePipeline` as the mini profile, and `scripts/benchmark_chat.py` times them the same way: `chat` (a 512 x 512
photo, "Can you generate an image for this backpack on the beach?", greedy response, 25 DDIM steps at 512 x 512)
and the fast path `generate`, each split into encoders, llm, diffusion and total; medians of --repeats calls after
one warm-up. Peak GPU memory is reported with them.

Random weights cost what trained ones cost, with one exception: how many tokens the LM writes before its EOS.
The median count is reported; a random LM seldom stops early, so the llm part is close to --max-new-tokens tokens.
Llama-2's tokenizer is not available offline: the mini LM's word-level tokenizer, with the same `[INST]` chat
template, stands in (prompts a few tokens shorter than Llama-2's, beside the 576 image tokens).

--tiny keeps every token count and image size (576 CLIP patches, 256 DINO tokens, 32000-word LM vocabulary,
64 x 64 latents, 512 x 512 images) and shrinks widths and depths, so that the whole path runs on a CPU in seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from benchmark_chat import Case, machine_info, measure, report  # noqa: E402

from cafe_core.models.encoders import IMAGENET_MEAN, IMAGENET_STD, ImageTransform  # noqa: E402
from cafe_core.models.reference import reference_config  # noqa: E402
from cafe_core.testing import tiny_sd2_configs  # noqa: E402

SD2 = "stabilityai/stable-diffusion-2-base"
CLIP = "openai/clip-vit-large-patch14-336"
DINO = "facebook/dinov2-giant"
LLAMA = "meta-llama/Llama-2-13b-chat-hf"
PHOTO_SIZE = 512
MESSAGE = "Can you generate an image for this backpack on the beach?"
# facebook/dinov2-giant's preprocessor_config.json: shorter side to 256, centre crop 224 (16 x 16 = 256 tokens).
DINOV2_PROCESSOR = {
    "do_resize": True,
    "size": {"shortest_edge": 256},
    "do_center_crop": True,
    "crop_size": {"height": 224, "width": 224},
    "resample": 3,
    "image_mean": list(IMAGENET_MEAN),
    "image_std": list(IMAGENET_STD),
}


def configs(tiny: bool) -> dict:
    """The published configurations, or (``tiny``) the same token counts and image sizes with tiny widths."""
    unet, vae = reference_config(SD2, subfolder="unet"), reference_config(SD2, subfolder="vae")
    if not tiny:
        return {
            "clip": reference_config(CLIP),
            "dino": reference_config(DINO),
            "lm": reference_config(LLAMA),
            "unet": unet,
            "vae": vae,
        }
    return tiny_sd2_configs()


@contextlib.contextmanager
def allocating(device: torch.device, dtype: torch.dtype):
    """Create parameters on ``device`` in ``dtype`` directly: Llama-2-13B never exists as 52 GB of float32."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            yield
    finally:
        torch.set_default_dtype(previous)


def build_dino(cfg: dict, device: torch.device, dtype: torch.dtype):
    """E_d as the sd2 profile loads it: DINOv2 behind the processor's 224 centre crop (giant: 16 x 16 patches).

    On the ``meta`` device it costs no memory, so a script that needs only ``num_patches`` builds it there.
    """
    from transformers import Dinov2Model

    from cafe_core.models.encoders import DinoEncoder

    transform = ImageTransform.from_config(
        DINOV2_PROCESSOR, default_size=224, default_mean=IMAGENET_MEAN, default_std=IMAGENET_STD
    )
    with allocating(device, dtype):
        return DinoEncoder(Dinov2Model(cfg["dino"]), transform)


def build_generator(cfg: dict, device: torch.device, dtype: torch.dtype, *, dino_tokens: int | None = None):
    """G as the stages build it: the SD2 UNet and VAE in ``dtype``, read through CAFE's CLIP and DINO tokens.

    ``dino_tokens``: E_d's patch count, when the caller has E_d; else it is read from E_d built on ``meta``.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    from cafe_core.models.attention import ConditioningConfig
    from cafe_core.models.generator import CafeGenerator

    with allocating(device, dtype):
        unet = UNet2DConditionModel.from_config(cfg["unet"])
        vae = AutoencoderKL.from_config(cfg["vae"])
    conditioning = ConditioningConfig(
        clip_dim=cfg["clip"].projection_dim,
        dino_dim=cfg["dino"].hidden_size,
        dino_tokens=dino_tokens or build_dino(cfg, torch.device("meta"), dtype).num_patches,
        cross_attention_dim=unet.config.cross_attention_dim,
    )
    scheduler = DDPMScheduler.from_config(reference_config(SD2, subfolder="scheduler"))
    return CafeGenerator(unet, scheduler, conditioning, vae=vae).to(device)


def build_pipeline(device: torch.device, dtype: torch.dtype, *, tiny: bool, steps: int, max_new_tokens: int):
    """CafePipeline over randomly initialised sd2-profile models; returns it and parameter counts (millions)."""
    from transformers import CLIPModel, LlamaForCausalLM

    from cafe_core.models.assistant import AssistantConfig, CafeAssistant
    from cafe_core.models.encoders import ClipEncoder
    from cafe_core.pipeline import CafePipeline, Sampling
    from cafe_core.world import World
    from cafe_core.world.datasets import build_tokenizer

    cfg = configs(tiny)
    with allocating(device, dtype):
        clip = ClipEncoder(CLIPModel(cfg["clip"]))
        lm = LlamaForCausalLM(cfg["lm"])
    dino = build_dino(cfg, device, dtype)
    assistant = CafeAssistant(
        lm, build_tokenizer(World(), for_clip=False), AssistantConfig(patch_dim=clip.patch_dim, clip_dim=clip.embed_dim)
    )
    generator = build_generator(cfg, device, dtype, dino_tokens=dino.num_patches).eval().requires_grad_(False)
    unet, vae = generator.unet, generator.vae
    pipe = CafePipeline.from_parts(
        assistant, clip, dino, generator, Sampling(steps=steps), max_new_tokens=max_new_tokens
    )

    def millions(module: torch.nn.Module) -> float:
        return round(sum(p.numel() for p in module.parameters()) / 1e6, 2)

    sizes = {
        "clip": millions(clip),
        "dino": millions(dino),
        "lm": millions(lm),
        "V, H, [GEN]": millions(assistant.trainable_module()),
        "unet with CAFE attention": millions(unet),
        "conditioner": millions(generator.conditioner),
        "vae": millions(vae),
    }
    return pipe, sizes


def random_cases(count: int) -> list[Case]:
    """Random 512 x 512 photos: the encoders see full-size inputs, and no two calls share a photo."""
    rng = np.random.default_rng(0)

    def photo() -> np.ndarray:
        return rng.integers(0, 256, (PHOTO_SIZE, PHOTO_SIZE, 3), dtype=np.uint8)

    return [Case(photo(), MESSAGE, photo(), photo()) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="torch device (default: cuda)")
    parser.add_argument(
        "--dtype",
        choices=("bfloat16", "float32"),
        help="the frozen models' dtype (default: bfloat16 on CUDA, else float32, as from_params loads)",
    )
    parser.add_argument("--tiny", action="store_true", help="tiny widths and depths, real token counts and sizes")
    parser.add_argument("--repeats", type=int, default=5, help="timed chat turns (and fast-path calls)")
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    default_json = Path(os.environ["OUT"]) / "sd2_benchmark.json" if os.environ.get("OUT") else None
    parser.add_argument("--json", type=Path, default=default_json, help="also write the results here ($OUT/...)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        parser.error("no CUDA device here: use --device cpu --tiny")
    dtype = getattr(torch, args.dtype or ("bfloat16" if cuda else "float32"))

    torch.manual_seed(0)  # the same random weights every run, so the LM writes the same tokens
    started = time.perf_counter()
    pipe, sizes = build_pipeline(device, dtype, tiny=args.tiny, steps=args.steps, max_new_tokens=args.max_new_tokens)
    build_seconds = time.perf_counter() - started
    if cuda:
        weights_gib = torch.cuda.memory_allocated(device) / 2**30
        torch.cuda.reset_peak_memory_stats(device)
    runs = measure(pipe, random_cases(args.repeats + 1))
    settings = {
        "models": "tiny" if args.tiny else "full size",
        "dtype": str(dtype).removeprefix("torch."),
        "repeats": args.repeats,
        "image": f"{PHOTO_SIZE}x{PHOTO_SIZE}",
        "steps": args.steps,
        "max_new_tokens": args.max_new_tokens,
        "build_s": round(build_seconds, 1),
    }
    if cuda:
        settings["weights_gib"] = round(weights_gib, 2)
        settings["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    results = report(machine_info(device), settings, runs)
    print("\nparameters (millions): " + ", ".join(f"{k} {v}" for k, v in sizes.items()))
    if args.json is not None:
        args.json.write_text(json.dumps({**results, "parameters_millions": sizes}, indent=2, default=str))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
