"""Two CPU processes under `accelerate launch` train the same generator as one process."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

SCRIPT = textwrap.dedent(
    '''
    import sys, numpy as np, torch
    from accelerate import Accelerator
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from safetensors.torch import save_file
    from cafe_core.diffusion import CafeGenerator, ConditioningConfig
    from cafe_core.train import GeneratorTraining, train_generator

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=24, attention_head_dim=8, norm_num_groups=8,
    )
    gen = CafeGenerator(unet, DDPMScheduler(num_train_timesteps=100), ConditioningConfig(12, 10, 4, 24, clip_tokens=2))
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 256, (32, 8, 8, 3), dtype=np.uint8)
    c, d = torch.from_numpy(rng.normal(size=(32, 12))).float(), torch.from_numpy(rng.normal(size=(32, 4, 10))).float()
    acc = Accelerator(cpu=True)
    if acc.is_main_process:
        save_file({k: v.clone().contiguous() for k, v in gen.state_dict().items()}, sys.argv[1] + "/initial.safetensors")
    train_generator(gen, targets, c, d, GeneratorTraining(steps=3, batch_size=8, lr=1e-3, checkpoint_every=3), sys.argv[1] + "/ckpt", accelerator=acc)
    if acc.is_main_process:
        save_file({k: v.contiguous() for k, v in gen.state_dict().items()}, sys.argv[1] + "/weights.safetensors")
    '''
)


def launch(tmp: Path, processes: int) -> dict:
    tmp.mkdir()
    script = tmp / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script), str(tmp)]
    if processes == 1:
        cmd = [sys.executable, str(script), str(tmp)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return load_file(tmp / "weights.safetensors"), load_file(tmp / "initial.safetensors")


def test_two_processes_match_one(tmp_path):
    one, initial = launch(tmp_path / "one", 1)
    two, _ = launch(tmp_path / "two", 2)
    assert one.keys() == two.keys()
    for key in one:
        np.testing.assert_allclose(one[key], two[key], rtol=1e-4, atol=1e-5, err_msg=key)
    moved = [k for k in one if not np.array_equal(one[k], initial[k])]
    assert len(moved) > len(one) // 2, "training must move the weights for the comparison to mean anything"
