"""Where the time of a G training step goes on this machine, and what each lever buys (prints figures; not a test).

    bin/with-env python scripts/benchmark_training_step.py [--repeats 5] [--batch 32]

With the world models from `dvc repro pretrain_world` (G is built from the world's UNet, as the
stage builds it; c and d are random, of the real shapes; without them, or with --random-world, from
a random UNet of the world's configuration: the same FLOPs), it measures in one run:
- the machine's matmul peak on all torch threads (fp32 and bf16, 2048 x 2048);
  bf16 only where the CPU computes it natively (AVX512-BF16 or AMX): elsewhere torch emulates
  it, and the emulated peak ran past 5 minutes on an AVX2 machine, so both bf16 figures are
  skipped with a note (`--bf16` measures them anyway);
- the FLOPs of one training step of G (forward + backward, torch's FlopCounterMode) and the
  share of the fp32 peak the unaccelerated step reaches;
- the speed-up of each lever against the unaccelerated step, timed in pairs (each lever's step
  right after an unaccelerated one, the median of their ratios): channels_last, bf16 autocast,
  torch.compile.
A lever that fails to run is reported with its error instead of a ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cafe_core.models.encoders import ClipEncoder, DinoEncoder  # noqa: E402
from cafe_core.models.generator import CafeGenerator  # noqa: E402
from cafe_core.models.text_to_image import TextToImage  # noqa: E402
from cafe_core.workbench.config import load_params  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_generation import median_time, paired_speedup  # noqa: E402


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n matmul in ``dtype`` on all torch threads."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n**3 / median_time(lambda: a @ b, repeats) / 1e9


def native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX); torch asks cpuinfo."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def build_generator(params, random_world: bool = False) -> CafeGenerator:
    """G as train_generator builds it from the world's models; with ``random_world``, or where the world
    is not built, from a UNet of the world's configuration with random weights, and c and d of the
    world encoders' sizes from params.yaml: the same layers and FLOPs per step, on a fresh clone."""
    model_root = ROOT / params.profile.model_root
    spec, g = params.generators["main"], params.generator
    if random_world or not (model_root / "t2i").is_dir():
        from diffusers import DDPMScheduler, UNet2DConditionModel

        from cafe_core.models.attention import ConditioningConfig
        from cafe_core.world.pretrain import unet_config

        p = params.pretrain
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**unet_config(p.t2i, params.world.image_size, p.clip.text_hidden_size))
        scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
        config = ConditioningConfig(
            clip_dim=p.clip.projection_dim,
            dino_dim=p.dino.hidden_size,
            dino_tokens=(params.world.image_size // p.dino.patch_size) ** 2,
            cross_attention_dim=unet.config.cross_attention_dim,
            clip_tokens=g.clip_tokens,
            attention=g.attention,
        )
        return CafeGenerator(unet.requires_grad_(True), scheduler, config).train()
    clip = ClipEncoder.from_pretrained(spec.clip, model_root=model_root)
    dino = DinoEncoder.from_pretrained(spec.dino, model_root=model_root)
    probe = torch.zeros(1, 3, params.world.image_size, params.world.image_size)
    c_dim = clip.image_embeds(probe).shape[-1]
    d_tokens, d_dim = dino.patch_tokens(probe).shape[1:]
    t2i = TextToImage.from_pretrained(params.profile.text_to_image, model_root=model_root)
    torch.manual_seed(0)
    return CafeGenerator.from_text_to_image(
        t2i, clip_dim=c_dim, dino_dim=d_dim, dino_tokens=d_tokens, clip_tokens=g.clip_tokens, attention=g.attention
    ).train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=None, help="default: params.yaml generator.batch_size")
    parser.add_argument("--bf16", action="store_true", help="measure bf16 even where the CPU only emulates it")
    parser.add_argument("--random-world", action="store_true", help="random UNet weights even where the world is built")
    args = parser.parse_args()
    measure_bf16 = args.bf16 or native_bf16()
    params = load_params(ROOT / "params.yaml")
    batch = args.batch or params.generator.batch_size
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16 {native_bf16()}"
    )
    peak = {"fp32": matmul_peak(torch.float32)}
    print(f"matmul peak: fp32 {peak['fp32']:.0f} GFLOP/s")
    if measure_bf16:
        peak["bf16"] = matmul_peak(torch.bfloat16)
        print(f"matmul peak: bf16 {peak['bf16']:.0f} GFLOP/s")

    gen = build_generator(params, args.random_world)
    size = params.world.image_size
    gen_rng = torch.Generator().manual_seed(0)
    target = torch.rand(batch, 3, size, size, generator=gen_rng) * 2 - 1
    c = torch.randn(batch, gen.config.clip_dim, generator=gen_rng)
    d = torch.randn(batch, gen.config.dino_tokens, gen.config.dino_dim, generator=gen_rng)
    draws = gen.training_draws(target.shape, gen_rng, params.generator.drop_p)
    optimizer = torch.optim.AdamW(gen.trainable_parameters(), lr=params.generator.lr)

    def step(model: Callable = gen.forward, autocast: bool = False, memory_format=torch.contiguous_format) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(target.contiguous(memory_format=memory_format), c, d, **draws)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    base = median_time(step, args.repeats)
    print(
        f"G training step, batch {batch}: {flops / 1e9:.1f} GFLOP, {base * 1e3:.0f} ms, "
        f"{flops / base / 1e9:.1f} GFLOP/s = {flops / base / 1e9 / peak['fp32']:.0%} of the fp32 matmul peak"
    )

    def contiguous() -> None:
        gen.unet.to(memory_format=torch.contiguous_format)

    def channels_last() -> None:
        def to_channels_last() -> None:
            gen.unet.to(memory_format=torch.channels_last)

        try:
            ratio = paired_speedup(
                step,
                lambda: step(memory_format=torch.channels_last),
                args.repeats,
                before_base=contiguous,
                before_lever=to_channels_last,
            )
            print(f"  channels_last: {ratio:.2f}x")
        finally:
            contiguous()

    def bf16() -> None:
        if not measure_bf16:
            print("  bf16 autocast: skipped, no native bf16 on this CPU (--bf16 measures it emulated)")
            return
        print(f"  bf16 autocast: {paired_speedup(step, lambda: step(autocast=True), args.repeats):.2f}x")

    def compiled() -> None:
        forward = torch.compile(gen.forward)
        started = time.perf_counter()
        step(model=forward)  # compiles
        first = time.perf_counter() - started
        ratio = paired_speedup(step, lambda: step(model=forward), args.repeats, warmup=2)
        print(f"  torch.compile: {ratio:.2f}x (its first step, which compiles, took {first:.0f} s)")

    print("speed-up of each lever (the median of the unaccelerated step's time over the lever's, timed in pairs):")
    for lever in (channels_last, bf16, compiled):
        try:
            lever()
        except Exception as error:  # a lever this torch or CPU cannot run is a finding, not a crash
            print(f"  {lever.__name__}: failed ({type(error).__name__}: {error})")


if __name__ == "__main__":
    main()
