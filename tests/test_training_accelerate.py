"""Two CPU processes under `accelerate launch` train the same generator as one process."""

import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

pytestmark = pytest.mark.slow  # end-to-end stages at tiny sizes

SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np, torch
    from accelerate import Accelerator
    from diffusers import DDPMScheduler
    from safetensors.torch import save_file
    from cafe_core.models.attention import ConditioningConfig
    from cafe_core.models.generator import CafeGenerator
    from cafe_core.testing import tiny_unet
    from cafe_core.workbench.training import GeneratorTraining, train_generator

    config = ConditioningConfig(12, 10, 4, 24, clip_tokens=2)
    gen = CafeGenerator(tiny_unet(0), DDPMScheduler(num_train_timesteps=100), config)
    rng = np.random.default_rng(0)
    targets = torch.from_numpy(rng.uniform(-1, 1, (32, 3, 8, 8))).float()  # pixel space: the targets themselves
    c = torch.from_numpy(rng.normal(size=(32, 12))).float()
    d = torch.from_numpy(rng.normal(size=(32, 4, 10))).float()
    acc = Accelerator(cpu=True)
    out = sys.argv[1]
    if acc.is_main_process:
        save_file({k: v.clone().contiguous() for k, v in gen.state_dict().items()}, out + "/initial.safetensors")
        open(out + "/processes", "w").write(str(acc.num_processes))
    training = GeneratorTraining(steps=3, batch_size=8, lr=1e-3, checkpoint_every=3)
    train_generator(gen, targets, c, d, training, sys.argv[1] + "/ckpt", accelerator=acc)
    if acc.is_main_process:
        save_file({k: v.contiguous() for k, v in gen.state_dict().items()}, sys.argv[1] + "/weights.safetensors")
    """
)


def launch(tmp: Path, processes: int) -> dict:
    from cafe_core.workbench.launch import cpu_launch

    tmp.mkdir()
    script = tmp / "train.py"
    script.write_text(SCRIPT)
    cmd, env = cpu_launch(processes, [str(script), str(tmp)])
    env["OMP_NUM_THREADS"] = "1"  # both runs on one thread per process
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp / "processes").read_text() == str(processes), "the launch started another number of processes"
    return load_file(tmp / "weights.safetensors"), load_file(tmp / "initial.safetensors")


def test_two_processes_match_one(tmp_path):
    one, initial = launch(tmp_path / "one", 1)
    two, _ = launch(tmp_path / "two", 2)
    assert one.keys() == two.keys()
    for key in one:
        np.testing.assert_allclose(one[key], two[key], rtol=1e-4, atol=1e-5, err_msg=key)
    moved = [k for k in one if not np.array_equal(one[k], initial[k])]
    assert len(moved) > len(one) // 2, "training must move the weights for the comparison to mean anything"
