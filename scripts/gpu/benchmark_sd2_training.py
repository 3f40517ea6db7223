"""Training throughput and peak memory of CAFE's two trained parts at the sd2 profile's full size, on one GPU.

    scripts/gpu/run_sd2_benchmark.sh                                              # both benchmarks, GPU machine
    bin/with-env python scripts/gpu/benchmark_sd2_training.py --device cpu --tiny # the same wiring on a CPU

Random weights in the published configurations (`cafe_core.models.reference`, as `benchmark_sd2.py` builds
them), trained by the stages' own step functions (`cafe_core.workbench.training.generator_step` and
`assistant_step`, then the optimiser update), under accelerate with bf16 autocast on CUDA as
`configs/accelerate/*.yaml` run them:

- G (eq. 3): the SD2-base UNet with CAFE's joint attention and conditioner, trained in float32 weights
  with AdamW; targets are the frozen VAE's latent distributions of 512 x 512 photos, encoded once (the
  stage caches them) and a latent drawn from each every step; c is (B, 768) and d (B, 256, 1536),
  DINOv2-giant's tokens. The paper's batch: 64.
- M (eq. 2): V, H and [GEN] trained in float32 beside the frozen Llama-2-13B in bf16; 576 CLIP L/14-336
  patch features per prompt (the stage caches them, so no CLIP runs here), a chat prompt with <image>, and a
  response of --response-tokens tokens. The paper's batch: 128.

Each part is timed under the `compute` settings of params.yaml it would need (micro-batches, gradient
checkpointing), in the order given by --generator-settings / --assistant-settings; a setting that runs out
of memory is reported as such and the next one runs. Reported per setting: seconds per step (median of
--repeats steps after one warm-up), samples per second, and peak GPU memory. With 8 GPUs the global batch is
split over the processes, so each holds 1/8 of it: the rows marked with the per-GPU batch are what one of
8 GPUs does.

--tiny keeps the token counts and image sizes and shrinks widths and depths, so the whole path runs on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(ROOT / "scripts" / "gpu")]

from benchmark_chat import machine_info  # noqa: E402
from benchmark_generation import median_time  # noqa: E402
from benchmark_sd2 import MESSAGE, PHOTO_SIZE, allocating, build_generator, configs  # noqa: E402

from cafe_core.workbench.config import StepCompute  # noqa: E402


def parse_settings(text: str) -> list[StepCompute]:
    """ "whole,16,ckpt:whole,ckpt:16" -> compute settings: micro-batch rows (whole: all at once), checkpointing."""
    settings = []
    for item in text.split(","):
        checkpointing, _, size = item.strip().rpartition(":")
        if checkpointing not in ("", "ckpt") or not (size == "whole" or size.isdigit()):
            raise argparse.ArgumentTypeError(f"bad setting {item!r}: use <rows> or whole, optionally ckpt:<rows>")
        micro = None if size == "whole" else int(size)
        settings.append(StepCompute(micro_batch_size=micro, gradient_checkpointing=checkpointing == "ckpt"))
    return settings


def label(setting: StepCompute) -> str:
    rows = setting.micro_batch_size or "whole"
    return f"micro-batch {rows}" + (", checkpointing" if setting.gradient_checkpointing else "")


def generator_batch(generator, batch: int, rng: np.random.Generator, torch_rng: torch.Generator) -> dict:
    cfg = generator.config
    photos = torch.from_numpy(rng.integers(0, 256, (batch, 3, PHOTO_SIZE, PHOTO_SIZE), dtype=np.uint8))
    return {
        "targets": torch.cat([generator.target_parameters(part.float() / 255) for part in photos.split(8)]),
        "c": torch.randn(batch, cfg.clip_dim, generator=torch_rng),
        "d": torch.randn(batch, cfg.dino_tokens, cfg.dino_dim, generator=torch_rng),
        **generator.training_draws(
            (batch, generator.unet.config.in_channels, PHOTO_SIZE // 8, PHOTO_SIZE // 8), torch_rng
        ),
    }


def build_assistant(cfg: dict, device: torch.device, dtype: torch.dtype):
    """M as train_assistant_stage builds it: the LM frozen in ``dtype``, V, H and [GEN] trainable in float32."""
    from transformers import LlamaForCausalLM

    from cafe_core.models.assistant import AssistantConfig, CafeAssistant
    from cafe_core.world import World
    from cafe_core.world.datasets import build_tokenizer

    with allocating(device, dtype):
        lm = LlamaForCausalLM(cfg["lm"])
    config = AssistantConfig(patch_dim=cfg["clip"].vision_config.hidden_size, clip_dim=cfg["clip"].projection_dim)
    assistant = CafeAssistant(lm, build_tokenizer(World(), for_clip=False), config)
    return assistant.to(device)


def assistant_batch(assistant, batch: int, response_tokens: int, patches: int, rng, torch_rng) -> dict:
    prompt = assistant.encode_prompt([{"role": "user", "content": MESSAGE}])
    eos = assistant.tokenizer.eos_token_id
    vocab = assistant.lm.get_input_embeddings().num_embeddings
    specials = {assistant.image_token_id, assistant.gen_token_id, eos}
    words = [i for i in range(4, min(vocab, 30000)) if i not in specials]
    return {
        "prompt_ids": [list(prompt) for _ in range(batch)],
        "response_ids": [[int(t) for t in rng.choice(words, response_tokens - 1)] + [eos] for _ in range(batch)],
        "patches": torch.randn(batch, patches, assistant.config.patch_dim, generator=torch_rng),
        "targets": torch.randn(batch, assistant.config.clip_dim, generator=torch_rng),
    }


def time_part(name: str, make, step_fn, batch_size: int, settings: list[StepCompute], args, device) -> list[dict]:
    """Time ``step_fn`` under each compute setting on a fresh model; an out-of-memory setting is recorded."""
    from accelerate import Accelerator

    from cafe_core.workbench.training import update

    rows = []
    for setting in settings:
        entry = {"part": name, "batch": batch_size, "setting": label(setting), **asdict(setting)}
        model = optimizer = prepared = one_step = None
        try:
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            accelerator = Accelerator(
                cpu=device.type == "cpu", mixed_precision="bf16" if device.type == "cuda" else "no"
            )
            model, batch, training = make(setting)
            params = [p for p in model.trainable_module().parameters()]
            optimizer = torch.optim.AdamW(params, lr=1e-5)
            if setting.gradient_checkpointing:
                model.enable_gradient_checkpointing()
            model.train()
            if getattr(model, "vae", None) is not None:
                model.vae.eval()  # frozen, as train_generator keeps it
            prepared, optimizer = accelerator.prepare(model, optimizer)

            def one_step(step=(accelerator, prepared, model, batch, training), params=params, optimizer=optimizer):
                step_fn(*step)
                update(step[0], params, optimizer)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)  # the step's kernels finish inside its timing

            seconds = median_time(one_step, args.repeats, warmup=args.warmup)
            entry.update(seconds_per_step=round(seconds, 3), samples_per_second=round(batch_size / seconds, 2))
            if device.type == "cuda":
                entry["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        except torch.OutOfMemoryError:
            entry["result"] = "out of memory"
        finally:
            model = optimizer = prepared = one_step = None  # free this setting's model before the next
            if device.type == "cuda":
                torch.cuda.empty_cache()
        print(json.dumps(entry), flush=True)
        rows.append(entry)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="torch device (default: cuda)")
    parser.add_argument("--tiny", action="store_true", help="tiny widths and depths, real token counts and sizes")
    parser.add_argument("--parts", default="generator,assistant", help="which parts to time (comma-separated)")
    parser.add_argument("--generator-batch", type=int, default=64, help="G's batch on this GPU (paper: 64 global)")
    parser.add_argument("--assistant-batch", type=int, default=128, help="M's batch on this GPU (paper: 128 global)")
    parser.add_argument(
        "--generator-settings", type=parse_settings, default=parse_settings("whole,16,8,ckpt:whole,ckpt:16")
    )
    parser.add_argument(
        "--assistant-settings", type=parse_settings, default=parse_settings("ckpt:32,ckpt:16,8,ckpt:whole")
    )
    parser.add_argument("--response-tokens", type=int, default=48, help="response length, EOS included")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    default_json = Path(os.environ["OUT"]) / "sd2_training_benchmark.json" if os.environ.get("OUT") else None
    parser.add_argument("--json", type=Path, default=default_json, help="also write the results here ($OUT/...)")
    args = parser.parse_args()
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be at least 1 and --warmup at least 0")
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        parser.error("no CUDA device here: use --device cpu --tiny")
    from cafe_core.workbench.training import (
        AssistantTraining,
        GeneratorTraining,
        assistant_step,
        generator_step,
    )

    cfg = configs(args.tiny)
    torch.manual_seed(0)
    rng, torch_rng = np.random.default_rng(0), torch.Generator().manual_seed(0)
    patches = (cfg["clip"].vision_config.image_size // cfg["clip"].vision_config.patch_size) ** 2
    results = []
    parts = {p.strip() for p in args.parts.split(",")}
    if "generator" in parts:

        def make_generator(setting):
            generator = build_generator(cfg, device, torch.float32)  # G trains in float32 weights
            generator.vae.requires_grad_(False)  # frozen, as train_generator keeps it
            batch = generator_batch(generator, args.generator_batch, rng, torch_rng)
            return generator, batch, GeneratorTraining(1, args.generator_batch, 1e-5, snr_gamma=5.0, compute=setting)

        def g_step(accelerator, prepared, generator, batch, training):
            generator_step(accelerator, prepared, generator, batch, training)

        results += time_part(
            "generator", make_generator, g_step, args.generator_batch, args.generator_settings, args, device
        )
    if "assistant" in parts:
        lm_dtype = torch.bfloat16 if cuda else torch.float32  # as train_assistant_stage loads the LM

        def make_assistant(setting):
            assistant = build_assistant(cfg, device, lm_dtype)
            batch = assistant_batch(assistant, args.assistant_batch, args.response_tokens, patches, rng, torch_rng)
            return assistant, batch, AssistantTraining(1, args.assistant_batch, compute=setting)

        def m_step(accelerator, prepared, assistant, batch, training):
            assistant_step(accelerator, prepared, batch, training)

        results += time_part(
            "assistant", make_assistant, m_step, args.assistant_batch, args.assistant_settings, args, device
        )
    info = machine_info(device)
    settings = {
        "models": "tiny" if args.tiny else "full size",
        "image": f"{PHOTO_SIZE}x{PHOTO_SIZE}",
        "image_tokens": patches,
        "response_tokens": args.response_tokens,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "autocast": "bf16" if cuda else "no",
    }
    print(", ".join(f"{k} {v}" for k, v in {**info, **settings}.items()))
    print("\n| part | batch | setting | s / step | samples / s | peak GiB |\n|---|---|---|---|---|---|")
    for r in results:
        cells = [r.get("seconds_per_step", r.get("result")), r.get("samples_per_second", ""), r.get("peak_gib", "")]
        print(f"| {r['part']} | {r['batch']} | {r['setting']} | " + " | ".join(str(c) for c in cells) + " |")
    if args.json is not None:
        args.json.write_text(json.dumps({"machine": info, "settings": settings, "results": results}, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
