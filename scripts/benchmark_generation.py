"""Benchmark CAFE-mini generation on this machine (prints figures; not a test).

    bin/with-env python scripts/benchmark_generation.py [--repro]

Measures, with the world models and a trained generator from `dvc repro ablation_embeddings`:
- images per second of the mini generator G (25 DDIM steps, both guidance branches batched);
- training steps per second of G with the frozen-encoder feature cache and without it
  (encoding E_c(y) and E_d(x) inside every step);
- with --repro: seconds of `dvc repro ablation_embeddings` from scratch, world models kept
  (removes generated data, generators and results first).
Figures are medians over repeats; the machine is printed with them.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cafe_core.models.encoders import ClipEncoder, DinoEncoder  # noqa: E402
from cafe_core.models.generator import CafeGenerator  # noqa: E402
from cafe_core.workbench.config import load_params  # noqa: E402
from cafe_core.workbench.loop import step_torch_generator  # noqa: E402
from cafe_core.workbench.paths import ProjectPaths  # noqa: E402
from cafe_core.workbench.stages.teacher_data import training_pairs  # noqa: E402


def median_time(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def paired_speedup(
    base: Callable[[], object],
    lever: Callable[[], object],
    repeats: int,
    warmup: int = 1,
    *,
    before_base: Callable[[], object] = lambda: None,
    before_lever: Callable[[], object] = lambda: None,
) -> float:
    """Median over ``repeats`` of ``base``'s time over ``lever``'s, the two timed back to back in each
    pair (after ``warmup`` calls of each; ``before_*`` run untimed before each call, e.g. to switch
    the model's memory format).

    Why pairs: a baseline timed once, before the levers, drifts with the machine (clock, caches,
    the allocator's warm-up): on a 2-core EPYC it read 316 ms where the same step took 230 to 260 ms
    later in the run, and every lever measured against it looked faster than it was.
    """
    for _ in range(warmup):
        before_base(), base(), before_lever(), lever()
    ratios = []
    for _ in range(repeats):
        before_base()
        started = time.perf_counter()
        base()
        base_seconds = time.perf_counter() - started
        before_lever()
        started = time.perf_counter()
        lever()
        ratios.append(base_seconds / (time.perf_counter() - started))
    return statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repro", action="store_true", help="also time `dvc repro ablation_embeddings` from scratch")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    model_root = ROOT / params.profile.model_root
    spec, g = params.generators["main"], params.generator
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}"
    )

    gen = CafeGenerator.from_pretrained(ProjectPaths(ROOT).generator("main", params.seeds[0]))
    clip = ClipEncoder.from_pretrained(spec.clip, model_root=model_root)
    dino = DinoEncoder.from_pretrained(spec.dino, model_root=model_root)
    pairs = training_pairs(ROOT / "data/datasets/teacher")
    batch = 32
    x, y = (pairs[name].subset(np.arange(batch)).decode() for name in ("x", "y"))
    c, d = clip.image_embeds(y), dino.patch_tokens(x)

    seconds = median_time(
        lambda: gen.generate(c, d, num_inference_steps=g.sample_steps, scheduler=g.scheduler), args.repeats
    )
    print(
        f"generation: {batch / seconds:.1f} images/s (batch {batch}, {g.sample_steps} steps, "
        f"3 guidance branches in one batch; median of {args.repeats})"
    )

    gen.train().requires_grad_(True)  # loaded for inference (frozen); train as train_generator does
    opt = torch.optim.AdamW(gen.parameters(), lr=1e-5)
    gen_rng = step_torch_generator(0, 0)

    def step(cc, dd):
        draws = gen.training_draws((batch, 3, gen.unet.config.sample_size, gen.unet.config.sample_size), gen_rng)
        target = gen.encode_target(torch.from_numpy(y).permute(0, 3, 1, 2).float() / 255)
        loss = gen(target, cc, dd, **draws)
        loss.backward()
        opt.step()
        opt.zero_grad()

    cached = median_time(lambda: step(c, d), args.repeats)
    uncached = median_time(lambda: step(clip.image_embeds(y), dino.patch_tokens(x)), args.repeats)
    print(
        f"training: {1 / cached:.2f} steps/s with the feature cache, {1 / uncached:.2f} steps/s encoding every step "
        f"(batch {batch}; ratio {uncached / cached:.2f}x; median of {args.repeats})"
    )

    if args.repro:
        for path in (
            "data/teacher",
            "data/datasets/teacher",
            "data/features",
            "models/generator",
            "results/variants",
            "results/ablation_embeddings",
            "results/teacher",
        ):
            shutil.rmtree(ROOT / path, ignore_errors=True)
        started = time.perf_counter()
        subprocess.run(["dvc", "repro", "ablation_embeddings"], cwd=ROOT, check=True)
        print(f"dvc repro ablation_embeddings from scratch (world models kept): {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    np.random.seed(0)
    main()
