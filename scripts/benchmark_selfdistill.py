"""Self-distillation's two choices, measured (prints figures; not a test).

    bin/with-env python scripts/benchmark_selfdistill.py lambdas [--requests 256] [--seed 0]
    bin/with-env python scripts/benchmark_selfdistill.py processes [--requests 256] [--seed 0]

Needs the stage-1 system of training seed ``--seed`` (`dvc repro train_assistant@mse`) and the
teacher dataset (`dvc repro teacher_data`). ``lambdas``: eq. 4's targets for the first
``--requests`` teacher requests at each lambda in [0, 0.25, 0.5, 0.75, 1], and the share the
automatic filter keeps (each test apart and both) with its 95% Wilson interval. ``processes``:
the same requests made by one process (torch's threads on every core) and by one process per core
under ``accelerate launch`` (one thread each), the rows per second of each and their ratio.
The datasets go to a temporary folder; only the cache of the base model's references grows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cafe_core.workbench.launch import cpu_launch  # noqa: E402

LAMBDAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _distiller():
    from cafe_core.workbench.config import load_params
    from cafe_core.workbench.stages.self_distill import SelfDistiller

    params = load_params(ROOT / "params.yaml")
    return params, SelfDistiller(params, ROOT)


def wilson(k: int, n: int) -> tuple[float, float]:
    """The 95% Wilson interval of a share k / n."""
    z, p = 1.96, k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def lambdas(requests: int, seed: int) -> None:
    params, distiller = _distiller()
    print(f"eq. 4 at each lambda: the first {requests} teacher requests, stage-1 system of training seed {seed}")
    print("lambda | CLIP test | DINO test | both (95% interval) | seconds")
    with tempfile.TemporaryDirectory() as tmp:
        for lam in LAMBDAS:
            start = time.perf_counter()
            ds = distiller.make(
                seed, Path(tmp) / f"lam-{lam}", requests=requests, lam=lam, batch_size=params.selfdistill.batch_size
            )
            seconds = time.perf_counter() - start
            t = ds.table(["clip_pass", "dino_pass"]).to_pydict()
            clip, dino = sum(t["clip_pass"]), sum(t["dino_pass"])
            both = sum(c and d for c, d in zip(t["clip_pass"], t["dino_pass"], strict=True))
            lo, hi = wilson(both, len(ds))
            print(
                f"{lam:.2f} | {clip / len(ds):.3f} | {dino / len(ds):.3f} | {both / len(ds):.3f} [{lo:.3f}, {hi:.3f}] "
                f"| {seconds:.1f}"
            )


def worker(out: Path, requests: int, seed: int) -> None:
    """Make the requests (under accelerate or not); the main process writes the wall time."""
    from accelerate import Accelerator

    params, distiller = _distiller()
    accelerator = Accelerator(cpu=True)
    start = time.perf_counter()
    distiller.make(
        seed,
        out / "dataset",
        requests=requests,
        lam=params.selfdistill.lam,
        batch_size=params.selfdistill.batch_size,
        accelerator=accelerator,
    )
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:  # generation alone: each process's time in generate_dataset, the slowest
        spent = [json.loads(p.read_text())["seconds"] for p in (out / "dataset/parts").glob("rank-*/seconds.json")]
        result = {"seconds": max(spent), "with_loading": time.perf_counter() - start}
        (out / "result.json").write_text(json.dumps({**result, "processes": accelerator.num_processes}))


def processes(requests: int, seed: int) -> None:
    cores = os.cpu_count() or 1
    results = {}
    for n in (1, cores):
        with tempfile.TemporaryDirectory() as tmp:
            program = [__file__, "worker", "--out", tmp, "--requests", str(requests), "--seed", str(seed)]
            cmd, env = cpu_launch(n, program)
            subprocess.run(cmd, env=env, check=True, cwd=ROOT)
            results[n] = json.loads((Path(tmp) / "result.json").read_text())
            assert results[n]["processes"] == n, f"asked for {n} processes, got {results[n]['processes']}"
    for n, r in results.items():
        print(
            f"{n} process(es): {requests / r['seconds']:.1f} rows/s ({r['seconds']:.1f} s generating, "
            f"{r['with_loading']:.1f} s with model loading)"
        )
    print(f"ratio {cores} processes / 1: {results[1]['seconds'] / results[cores]['seconds']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["lambdas", "processes", "worker"])
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.what == "lambdas":
        lambdas(args.requests, args.seed)
    elif args.what == "processes":
        processes(args.requests, args.seed)
    else:
        worker(args.out, args.requests, args.seed)


if __name__ == "__main__":
    main()
