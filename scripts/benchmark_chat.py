"""Seconds per chat turn of the CAFE pipeline on the mini profile, split into its parts (prints a table; not a test).

    bin/with-env python scripts/benchmark_chat.py [--turns 10] [--assistant mse] [--num-images 1] [--threads N]

Loads `CafePipeline.from_params` on the CPU (the trained assistant of `dvc repro train_assistant@<name>`), warms it
up once, then times --turns chat turns ("Can you generate an image for this <class> on the beach?" about a held-out
subject's photo) and as many fast-path calls (`CafePipeline.generate`, the reference a render of the subject on the
beach). The parts are the pipeline's own timings: encoders (CLIP patches and DINO tokens of the photo; the fast
path adds the reference's CLIP embedding), llm (greedy response, then [GEN]), diffusion (G's sampling and decoding)
and total (the whole call). Every call is about a photo that the call before did not see, so each pays for the
encoders, as the first turn of a chat does. The table gives median, min and max over the calls.

scripts/gpu/benchmark_sd2.py times the same calls with the sd2 profile's full-size models and imports the
measuring helpers from here.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("encoders", "llm", "diffusion", "total")


@dataclass(frozen=True)
class Case:
    """One chat turn and one fast-path call, each about its own photo.

    The pipeline keeps the features of the last photo it encoded; two photos per case keep
    every call, chat or fast path, from reusing the call before's.
    """

    photo: np.ndarray  # uint8 (H, W, 3): the chat turn's subject photo
    message: str
    fast_photo: np.ndarray  # the fast path's subject photo
    reference: np.ndarray  # the fast path's reference image


def measure(pipe, cases: list[Case], *, num_images: int = 1) -> dict[str, list]:
    """Per-call seconds of ``pipe.chat`` and ``pipe.generate`` on ``cases[1:]``, after a warm-up on ``cases[0]``.

    Returns ``{"chat": [timings...], "fast path": [timings...], "tokens": [new tokens per turn...]}``.
    """
    if len(cases) < 2:
        raise ValueError("measure needs a warm-up case and at least one timed case")
    runs: dict[str, list] = {"chat": [], "fast path": [], "tokens": []}
    for index, case in enumerate(cases):
        turn = pipe.chat(case.photo, case.message, seed=index, num_images=num_images)
        _, fast = pipe.generate(case.fast_photo, case.reference, seed=index, num_images=num_images)
        if index:
            runs["chat"].append(turn.timings)
            runs["fast path"].append(fast)
            runs["tokens"].append(len(pipe.assistant.last_generated_ids[0]))
    return runs


def summarise(runs: dict[str, list]) -> dict[str, dict[str, dict[str, float]]]:
    """``{path: {part: {"median", "min", "max"}}}`` in seconds.

    A part a path lacks (the fast path's llm) is left out.
    """
    summary = {}
    for path in ("chat", "fast path"):
        summary[path] = {}
        for part in PARTS:
            seconds = [timings[part] for timings in runs[path] if part in timings]
            if seconds:
                summary[path][part] = {"median": statistics.median(seconds), "min": min(seconds), "max": max(seconds)}
    return summary


def markdown_table(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = ["| path | part | median s | min s | max s |", "| --- | --- | ---: | ---: | ---: |"]
    for path, parts in summary.items():
        for part, s in parts.items():
            lines.append(f"| {path} | {part} | {s['median']:.3f} | {s['min']:.3f} | {s['max']:.3f} |")
    return "\n".join(lines)


def machine_info(device: torch.device) -> dict[str, object]:
    info: dict[str, object] = {
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def report(info: dict, settings: dict, runs: dict[str, list]) -> dict[str, object]:
    """Print machine, settings and the table; return them together (what benchmark_sd2 saves as JSON)."""
    summary = summarise(runs)
    settings = {**settings, "median_new_tokens": statistics.median(runs["tokens"])}
    print(", ".join(f"{k} {v}" for k, v in info.items()))
    print(", ".join(f"{k} {v}" for k, v in settings.items()))
    print()
    print(markdown_table(summary))
    return {"machine": info, "settings": settings, "seconds": summary}


# --- mini profile ---------------------------------------------------------------------------------


def world_cases(params, count: int) -> list[Case]:
    """Held-out object subjects: the plain photo for the chat, another scene for the fast path,
    the beach as reference."""
    from cafe_core.world import make_world

    world = make_world(params)
    subjects = world.subjects("object", "eval")
    if count > len(subjects):
        raise ValueError(f"at most {len(subjects)} held-out object subjects, asked for {count}")
    beach = world.context("object", "beach")
    return [
        Case(
            photo=world.render(subject, seed=0).image,
            message=f"Can you generate an image for this {subject.cls} on the beach?",
            fast_photo=world.render(subject, seed=1).image,
            reference=world.render(subject, beach, seed=2).image,
        )
        for subject in subjects[:count]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=10, help="timed chat turns (and fast-path calls)")
    parser.add_argument("--num-images", type=int, default=1, help="images drawn per call")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: params.yaml's `threads`)")
    parser.add_argument("--assistant", default="mse", help="trained assistant models/assistant/<name> (default: mse)")
    args = parser.parse_args()
    if args.turns < 1 or args.num_images < 1:
        parser.error("--turns and --num-images must be at least 1")

    sys.path.insert(0, str(ROOT))
    from cafe_core.pipeline import CafePipeline
    from cafe_core.workbench.config import load_params

    params = load_params(ROOT / "params.yaml")
    if params.profile.name != "mini":
        parser.error(f"params.yaml picks the {params.profile.name!r} profile; this benchmark runs the mini one")
    threads = args.threads if args.threads is not None else params.threads
    if threads:
        torch.set_num_threads(threads)
    try:
        pipe = CafePipeline.from_params(params, ROOT, assistant=args.assistant, device="cpu")
    except FileNotFoundError as error:
        raise SystemExit(f"benchmark_chat: {error}") from None
    runs = measure(pipe, world_cases(params, args.turns + 1), num_images=args.num_images)
    settings = {
        "assistant": args.assistant,
        "turns": args.turns,
        "num_images": args.num_images,
        "steps": pipe.sampling.steps,
        "max_new_tokens": pipe.max_new_tokens,
    }
    report(machine_info(pipe.device), settings, runs)


if __name__ == "__main__":
    main()
