"""Two torch jobs on one machine: how a training step slows when a second job runs beside it (prints figures).

    bin/with-env python scripts/benchmark_sharing.py [--steps 30]

A user runs a notebook while `dvc repro` trains. Each setting below runs a DINO-sized training step
(the world's ViT, batch 256) alone, then beside a second copy of itself, in fresh processes, and
prints milliseconds per step and the slowdown beside against alone. Settings: torch's default
OpenMP wait policy (threads spin at every barrier), a short spin (GOMP_SPINCOUNT, what
bin/with-env sets), a passive policy, and one thread per job. Run it on an otherwise quiet machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

JOB = """
import sys, time, torch
from transformers import Dinov2Config, Dinov2Model
torch.manual_seed(0)
config = Dinov2Config(hidden_size=96, num_hidden_layers=4, num_attention_heads=4, image_size=16, patch_size=4)
model = Dinov2Model(config)
opt = torch.optim.AdamW(model.parameters(), 1e-3)
x = torch.randn(256, 3, 16, 16)
def step():
    model(pixel_values=x).pooler_output.pow(2).mean().backward()
    opt.step()
    opt.zero_grad()
for _ in range(3):
    step()
start = time.perf_counter()
for _ in range(int(sys.argv[1])):
    step()
print((time.perf_counter() - start) / int(sys.argv[1]) * 1e3)
"""

SETTINGS = {
    "default (spin)": {"GOMP_SPINCOUNT": None, "OMP_WAIT_POLICY": None},
    "GOMP_SPINCOUNT=10000": {"GOMP_SPINCOUNT": "10000", "OMP_WAIT_POLICY": None},
    "OMP_WAIT_POLICY=PASSIVE": {"GOMP_SPINCOUNT": None, "OMP_WAIT_POLICY": "PASSIVE"},
    "1 thread per job": {"GOMP_SPINCOUNT": None, "OMP_WAIT_POLICY": None, "OMP_NUM_THREADS": "1"},
}


def job(env: dict, steps: int) -> subprocess.Popen:
    full = {k: v for k, v in os.environ.items() if k not in env}
    full.update({k: v for k, v in env.items() if v is not None})
    return subprocess.Popen([sys.executable, "-c", JOB, str(steps)], env=full, stdout=subprocess.PIPE, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; ms per training step, one run each")
    for name, env in SETTINGS.items():
        alone = float(job(env, args.steps).communicate()[0])
        other = job(env, args.steps * 4)  # runs through the whole measurement beside
        time.sleep(4)  # past its start-up
        beside = float(job(env, args.steps).communicate()[0])
        other.communicate()
        print(f"{name:26s} alone {alone:6.0f}   beside another {beside:6.0f}   slowdown {beside / alone:4.1f}x")


if __name__ == "__main__":
    main()
