"""Write the `sd2` profile's checkpoints, tiny and random, in their real on-disk layouts.

    bin/with-env python scripts/write_tiny_checkpoints.py OUT [--layout hub|folder] [--variants]

`--layout hub` (default) makes OUT a Hugging Face cache; `--layout folder` a model root of
`OUT/<repo id>` folders. Then run anything of the `sd2` profile on them, offline, e.g.

    HF_HUB_CACHE=OUT HF_HUB_OFFLINE=1 bin/with-env cafe chat photo.jpg "on a beach" ...
    CAFE_MODEL_ROOT=OUT ...                                    (folder layout)

The numbers such models give mean nothing; every line of the real code path runs
(cafe_core/testing/checkpoints.py lists what each checkpoint keeps of the published one).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cafe_core.testing.checkpoints import write_tiny_checkpoints


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the cache or model root to write (created)")
    parser.add_argument("--layout", choices=("hub", "folder"), default="hub")
    parser.add_argument(
        "--variants", action="store_true", help="also SD2-768 (v), a GQA Llama, CLIP B/16, DINOv2+registers"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    written = write_tiny_checkpoints(args.out, layout=args.layout, variants=args.variants, seed=args.seed)
    for name, folder in written.items():
        print(f"{name}: {folder}")
    env = "HF_HUB_CACHE" if args.layout == "hub" else "CAFE_MODEL_ROOT"
    extra = " HF_HUB_OFFLINE=1" if args.layout == "hub" else ""
    print(f"\nuse them with: {env}={args.out.resolve()}{extra}")


if __name__ == "__main__":
    main()
