"""What a bigger world UNet costs per training step, before any variant is pretrained (prints figures; not a test).

    bin/with-env python scripts/benchmark_world_unet.py [--repeats 10] [--batch 32]

G starts from the world's text-to-image UNet and draws about what that UNet can draw
(docs/measurements.md). That UNet reads its conditions through cross-attention at 8 x 8 and
4 x 4 only, with 32 channels and one ResNet per block at the full 16 x 16. Each variant
below adds capacity where the photo's details are lost. A variant is worth pretraining only if
the budget can pay for it: it reruns the world and every G, at its ratio.

The variants are random UNets built from ``params.yaml``'s ``pretrain.t2i``, so a fresh clone can
run this. Each step is forward, backward and AdamW on a batch of the world's images, with 20
condition tokens (G's 4 CLIP and 16 DINO tokens). Each variant is timed in turn within every
round, so a drift of the machine's speed reaches all of them. The script prints the median of
``--repeats`` rounds after two warm-up rounds, and the ratio to the world's layout.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cafe_core.workbench.config import load_params  # noqa: E402
from cafe_core.world.pretrain import unet_config  # noqa: E402

SD2_LAYOUT = {  # SD2's UNet: cross-attention at every resolution but the lowest
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
VARIANTS = {
    "the world's layout": {},
    "64 channels at 16 x 16": {"block_out_channels": [64, 64, 64]},
    "2 ResNets per block": {"layers_per_block": 2},
    "SD2's layout, 8 heads": SD2_LAYOUT,
    "SD2's layout, 2 heads": {**SD2_LAYOUT, "attention_head_dim": 2},
    "cross-attention at all three": {
        "down_block_types": ["CrossAttnDownBlock2D"] * 3,
        "up_block_types": ["CrossAttnUpBlock2D"] * 3,
    },
}


def main() -> None:
    from diffusers import UNet2DConditionModel

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds (after two warm-up rounds)")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    size, width = params.world.image_size, params.pretrain.clip.text_hidden_size
    base = unet_config(params.pretrain.t2i, size, width)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, size, size)
    tokens = torch.randn(args.batch, 20, width)
    t = torch.randint(0, 1000, (args.batch,))
    models = {}
    for name, override in VARIANTS.items():
        unet = UNet2DConditionModel(**{**base, **override}).train()
        models[name] = unet, torch.optim.AdamW(unet.parameters(), lr=1e-4)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for round_ in range(args.repeats + 2):
        for name, (unet, opt) in models.items():
            start = time.perf_counter()
            unet(x, t, encoder_hidden_states=tokens).sample.pow(2).mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if round_ >= 2:
                times[name].append(time.perf_counter() - start)
    print(f"one training step, batch {args.batch} of {size} x {size}, {torch.get_num_threads()} torch threads")
    reference = statistics.median(times["the world's layout"])
    for name, (unet, _) in models.items():
        median = statistics.median(times[name])
        parameters = sum(p.numel() for p in unet.parameters()) / 1e6
        print(f"  {name:30s} {parameters:5.2f}M parameters  {median * 1000:6.0f} ms  {median / reference:.2f}x")


if __name__ == "__main__":
    main()
