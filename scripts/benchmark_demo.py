"""Latency of one slider update of the blending demo (prints figures; not a test).

    bin/with-env python scripts/benchmark_demo.py [--repeats 7] [--assistant mse] [--num-images 4]

With the trained models of the project's profile (mini: `dvc repro train_assistant@mse`), it builds
the demo as notebooks/blending_demo.ipynb does (the first held-out subject, its request, the true
image of that request as the reference) and moves the lambda slider `--repeats` times: the median
wall time of one update (the widget's whole callback: drawing, PNG tiling, status) and of its
parts as the drawing reports them. The first draw, which also asks the assistant, is timed apart.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cafe_core.pipeline import CafePipeline  # noqa: E402
from cafe_core.workbench.config import load_params  # noqa: E402
from cafe_core.workbench.demos import BlendingDemo, blending_widget, examples, pickers  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--assistant", default="mse")
    parser.add_argument("--num-images", type=int, default=4)
    args = parser.parse_args()
    import torch

    params = load_params(ROOT / "params.yaml")
    pipe = CafePipeline.from_params(params, ROOT, assistant=args.assistant)
    pipe.set_progress_bar_config(disable=True)
    items = examples(params, ROOT)
    photos, references = pickers(items)
    subject = items[0]
    start = time.perf_counter()
    demo = BlendingDemo(pipe, subject.photo, [references[next(iter(references))]], subject.request)
    widget = blending_widget(demo, photos, references, num_images=args.num_images)
    first = time.perf_counter() - start
    drawings = []
    draw = demo.draw
    demo.draw = lambda knobs: drawings.append(draw(knobs)) or drawings[-1]
    seconds = []
    for k in range(args.repeats):
        start = time.perf_counter()
        widget.sliders["lam"].value = 0.1 + 0.8 * (k % 2)  # each move changes the value: one redraw
        seconds.append(time.perf_counter() - start)
    parts = {p: statistics.median(d.timings[p] for d in drawings) for p in drawings[0].timings}
    print(
        f"profile {params.profile.name}, {torch.get_num_threads()} torch threads, {args.num_images} images of "
        f"{drawings[0].images.shape[1]} px, {pipe.sampling.steps} {pipe.sampling.scheduler} steps"
    )
    print(f"first draw (builds the widget, asks the assistant): {first:.2f} s")
    print(
        f"one slider update: median {statistics.median(seconds):.2f} s over {args.repeats} "
        f"(min {min(seconds):.2f}, max {max(seconds):.2f}); parts (median): "
        + ", ".join(f"{p} {v:.3f} s" for p, v in parts.items())
    )


if __name__ == "__main__":
    main()
