"""One process on every core, or one process per core: G's training throughput both ways (prints figures; not a test).

    bin/with-env python scripts/benchmark_processes.py [--steps 40] [--batch 32]

With the world models from `dvc repro pretrain_world` (else a random UNet of their configuration),
it trains G (built as the stage builds it, on random c, d and targets of the real shapes) for
``--steps`` steps of the global batch ``--batch``, twice: in one process with torch's threads on every core, and under
``accelerate launch --multi_gpu --num_processes <cores>`` (torchrun's launcher, which on a CPU
machine starts that many CPU processes; ``--cpu`` alone starts one) with one thread per process (each process
takes its shard of every batch; tests/test_training_accelerate.py checks they train the same
model). It prints the median time of a step of each (between the starts of consecutive forward
passes of the main process, after the first ``--steps / 4`` steps: start-up, the first steps and
the rare checkpoint write are left out) and their ratio. Third, ``<cores>`` independent one-thread
processes, each training its own G on the whole batch at once, as a stage's training seeds could:
the slowest one's median step, and the throughput ratio of Gs trained per second against one
process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cafe_core.workbench.launch import cpu_launch  # noqa: E402


def worker(steps: int, batch: int, out: Path) -> None:
    """Train G for ``steps`` steps (under accelerate or not); the main process writes its step times."""
    import numpy as np
    import torch
    from accelerate import Accelerator

    sys.path.insert(0, str(ROOT / "scripts"))
    from benchmark_training_step import build_generator

    from cafe_core.workbench.config import load_params
    from cafe_core.workbench.training import GeneratorTraining, train_generator

    params = load_params(ROOT / "params.yaml")
    accelerator = Accelerator(cpu=True)
    gen = build_generator(params)
    size, n = params.world.image_size, 4 * batch
    rng = np.random.default_rng(0)
    targets = torch.from_numpy(rng.uniform(-1, 1, (n, 3, size, size))).float()  # the world's UNet denoises pixels
    c = torch.from_numpy(rng.normal(size=(n, gen.config.clip_dim))).float()
    d = torch.from_numpy(rng.normal(size=(n, gen.config.dino_tokens, gen.config.dino_dim))).float()
    stamps: list[float] = []
    gen.register_forward_pre_hook(lambda *_: stamps.append(time.perf_counter()))  # one forward per step
    training = GeneratorTraining(steps=steps, batch_size=batch, lr=params.generator.lr, checkpoint_every=steps)
    with tempfile.TemporaryDirectory() as ckpt:
        train_generator(gen, targets, c, d, training, ckpt, accelerator=accelerator)
    if accelerator.is_main_process:
        steps_timed = np.diff(stamps[steps // 4 :])
        result = {"seconds_per_step": float(np.median(steps_timed)), "processes": accelerator.num_processes}
        out.write_text(json.dumps(result))


def run(processes: int, steps: int, batch: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        me = [
            str(Path(__file__).resolve()),
            "--worker",
            "--steps",
            str(steps),
            "--batch",
            str(batch),
            "--out",
            str(out),
        ]
        cmd, env = cpu_launch(processes, me)
        subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
        result = json.loads(out.read_text())
        if result["processes"] != processes:
            raise RuntimeError(f"asked for {processes} processes, the launch ran {result['processes']}")
        return result["seconds_per_step"]


def run_independent(processes: int, steps: int, batch: int) -> float:
    """Seconds per step of the slowest of ``processes`` one-thread processes, each training its own G
    on the whole batch at the same time (as the training seeds of a stage could)."""
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / f"result-{i}.json" for i in range(processes)]
        me = [sys.executable, str(Path(__file__).resolve()), "--worker", "--steps", str(steps), "--batch", str(batch)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        procs = [subprocess.Popen([*me, "--out", str(out)], env=env, stdout=subprocess.DEVNULL) for out in outs]
        if any(proc.wait() for proc in procs):
            raise RuntimeError("an independent worker failed (its error is above)")
        return max(json.loads(out.read_text())["seconds_per_step"] for out in outs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.steps, args.batch, args.out)
        return
    cores = os.cpu_count() or 1
    one = run(1, args.steps, args.batch)
    print(f"one process, {cores} threads: {one * 1e3:.0f} ms per step of batch {args.batch}")
    many = run(cores, args.steps, args.batch)
    print(f"{cores} processes, 1 thread each: {many * 1e3:.0f} ms per step of batch {args.batch}")
    print(f"throughput ratio ({cores} processes / one): {one / many:.2f}x")
    apart = run_independent(cores, args.steps, args.batch)
    print(f"{cores} independent 1-thread processes, each its own G: {apart * 1e3:.0f} ms a step of batch {args.batch}")
    print(f"throughput ratio ({cores} independent Gs / one): {one / (apart / cores):.2f}x")


if __name__ == "__main__":
    main()
