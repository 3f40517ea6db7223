"""Whether diffusers' model CPU offload of CafePipeline draws what the pipeline on the device draws.

    bin/with-env python scripts/gpu/check_offload.py --device cpu     # the hooks alone (what the tests check)
    python scripts/gpu/check_offload.py --device cuda                 # on the GPU machine (with the carried wheels)

Builds two tiny random pipelines from one seed (`cafe_core.testing.tiny_pipeline`): one moved whole
to the device, one with `enable_model_cpu_offload(device=...)` (LM, UNet and VAE on the device only
while they run). Draws a chat turn and a fast-path call with each; prints whether the responses
and images agree and where each component sits after the offloaded call, and exits 1 if they differ.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cafe_core.testing import tiny_pipeline  # noqa: E402


def _draws(pipe, photo, reference):
    chat = pipe(photo, "can you draw it on the beach ?", seed=1, num_images_per_prompt=2, output_type="np")
    fast = pipe(photo, reference_images=reference, seed=1, num_images_per_prompt=2, output_type="np")
    return chat.response, np.concatenate([chat.images, fast.images])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    photo, reference = (rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(2))
    whole = tiny_pipeline().to(args.device)
    offloaded = tiny_pipeline()
    offloaded.enable_model_cpu_offload(device=args.device)
    for pipe in (whole, offloaded):
        pipe.set_progress_bar_config(disable=True)
    (r1, a), (r2, b) = _draws(whole, photo, reference), _draws(offloaded, photo, reference)
    where = {
        name: str(next(m.parameters()).device) for name, m in offloaded.components.items() if hasattr(m, "parameters")
    }
    result = {
        "device": args.device,
        "same_response": r1 == r2,
        "max_pixel_difference": int(np.abs(np.round(a * 255) - np.round(b * 255)).max()),
        "components_after_offloaded_call": where,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if result["same_response"] and result["max_pixel_difference"] <= 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
