"""Peak memory of reading G's training data whole against streaming it (prints figures; not a test).

    bin/with-env python scripts/benchmark_streaming.py [--rows 2000] [--size 256]

Writes a dataset of ``--rows`` random targets of ``--size`` px in the project's format, then, each
in a fresh process so the peaks do not mix, measures the peak resident memory (``ru_maxrss``) of:
- ``decoded``: what G's stage did before it streamed: every kept target decoded into one array;
- ``streamed``: what it does now: the targets streamed a batch at a time into a memory-mapped
  cache (an encoder that keeps a (b, 4, size/8, size/8) mean image, a VAE latent's size), then
  100 training batches of 64 rows gathered from the cache;
- ``baseline``: the same process importing the same modules and doing nothing else.
The difference to the baseline is what the data costs; the decoded size is rows x size^2 x 3 bytes.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write(folder: Path, rows: int, size: int) -> None:
    import numpy as np

    from cafe_core.data.dataset import DatasetWriter

    rng = np.random.default_rng(0)
    with DatasetWriter(folder, rows_per_shard=256) as writer:
        for i in range(rows):
            # smooth random images (PNG compresses them as it does photos, unlike white noise)
            small = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
            image = np.kron(small, np.ones((16, 16, 1), np.uint8))
            writer.add(
                {"id": f"r{i}", "x": image, "y": image, "instruction": "a ball", "teacher": "bench"}
                | {"teacher_version": "0", "seed": i}
            )


def measure(mode: str, folder: Path, cache: Path) -> dict:
    import numpy as np
    import torch

    from cafe_core.data.dataset import open_dataset
    from cafe_core.data.features import cached_features

    ds = open_dataset(folder)
    kept = ds.kept()
    start = time.perf_counter()
    if mode == "decoded":
        images = ds.images("y", kept)
        checksum = int(images[:, 0, 0, 0].sum())
    elif mode == "streamed":

        def encode(batch: np.ndarray) -> torch.Tensor:  # a stand-in for the VAE: 8x smaller, 4 channels
            x = torch.from_numpy(batch).float().permute(0, 3, 1, 2)
            x = torch.nn.functional.avg_pool2d(x, 8)
            return torch.cat([x, x[:, :1]], dim=1)

        features = cached_features("bench", ds.image_rows("y", kept), encode, key_parts=("bench",), cache_dir=cache)
        rng = np.random.default_rng(0)
        checksum = 0
        for _ in range(100):
            checksum += int(features[rng.choice(len(features), 64, replace=False)].sum() > 0)
    else:
        checksum = 0
    return {
        "mode": mode,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": time.perf_counter() - start,
        "checksum": checksum,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--measure", nargs=3, metavar=("MODE", "FOLDER", "CACHE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        mode, folder, cache = args.measure
        print(json.dumps(measure(mode, Path(folder), Path(cache))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data"
        write(folder, args.rows, args.size)
        on_disk = sum(p.stat().st_size for p in folder.glob("*.parquet")) / 2**20
        decoded = args.rows * args.size**2 * 3 / 2**20
        print(f"{args.rows} rows of {args.size} px: {on_disk:.0f} MB of Parquet, {decoded:.0f} MB decoded")
        results = {}
        for mode in ("baseline", "decoded", "streamed"):
            cmd = [sys.executable, __file__, "--measure", mode, str(folder), str(Path(tmp) / "cache")]
            results[mode] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        base = results["baseline"]["peak_mb"]
        for mode in ("decoded", "streamed"):
            r = results[mode]
            print(
                f"{mode}: peak {r['peak_mb']:.0f} MB, {r['peak_mb'] - base:+.0f} MB over the baseline, "
                f"{r['seconds']:.1f} s"
            )


if __name__ == "__main__":
    main()
