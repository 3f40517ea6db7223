"""The prepared GPU benchmarks run end to end: a device machine is lent for minutes, so a script that
breaks there wastes the loan. Each runs here with --tiny (real token counts and image sizes, tiny
widths) on the CPU, through the same code paths as at full size, and writes the JSON a device run
brings back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run_script(name: str, *args: str, out: Path) -> dict:
    env = {**os.environ, "OUT": str(out), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu" / name), "--device", "cpu", "--tiny", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    written = sorted(out.glob("*.json"))
    assert len(written) == 1, written
    return json.loads(written[0].read_text())


def test_chat_benchmark_times_every_part_of_a_turn(tmp_path):
    results = run_script("benchmark_sd2.py", "--repeats", "1", "--steps", "2", "--max-new-tokens", "4", out=tmp_path)
    assert results["settings"]["image"] == "512x512"
    seconds = results["seconds"]
    assert {"encoders", "llm", "diffusion", "total"} <= set(seconds["chat"])
    assert {"encoders", "diffusion", "total"} <= set(seconds["fast path"])
    assert all(part["median"] > 0 for path in seconds.values() for part in path.values())
    sizes = results["parameters_millions"]
    assert sizes["conditioner"] > 0 and sizes["vae"] > 0


def test_training_benchmark_steps_both_parts_under_each_setting(tmp_path):
    results = run_script(
        "benchmark_sd2_training.py",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--generator-batch",
        "2",
        "--assistant-batch",
        "2",
        "--generator-settings",
        "whole,ckpt:1",
        "--assistant-settings",
        "ckpt:1",
        out=tmp_path,
    )
    rows = results["results"]
    assert [(r["part"], r["setting"]) for r in rows] == [
        ("generator", "micro-batch whole"),
        ("generator", "micro-batch 1, checkpointing"),
        ("assistant", "micro-batch 1, checkpointing"),
    ]
    assert all(r["seconds_per_step"] > 0 and r["samples_per_second"] > 0 for r in rows)
    assert results["settings"]["image_tokens"] == 576  # CLIP ViT-L/14 at 336: 24 x 24 patches
