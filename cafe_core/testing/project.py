"""A tiny copy of the project under ``profile: sd2``: what the ``sd2_e2e`` tests run ``dvc repro`` on.

Everything a researcher with the real weights has, at tiny sizes: the checkpoints of
:mod:`cafe_core.testing.checkpoints` in a Hugging Face cache, a training dataset in the project's
format (:mod:`cafe_core.data.dataset`), DreamBench and a faces folder for evaluation. Until an sd2 teacher writes
real training quadruplets, the training rows are DreamBench photos: ``x`` one photo of a subject,
``y`` another photo of it, the instruction and dialogue one of its prompts in CAFE's phrasing. So
the evaluation subjects were trained on and no figure means anything; every line of the stages runs.
The faces folder's "people" are random photos (no face photo ships with the project).

    root = write_tiny_sd2_project(tmp, source=project_root)
    subprocess.run(["dvc", "repro"], cwd=root, env={**os.environ, **sd2_environment(root)}, check=True)
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import yaml

__all__ = [
    "FACES_FOLDER",
    "TRAINING_DATASET",
    "sd2_environment",
    "tiny_sd2_params",
    "write_dreambench_dataset",
    "write_faces_folder",
    "write_tiny_sd2_project",
]

TRAINING_DATASET = "data/training"
"""Where ``params.yaml``'s ``data.folders.training`` (sd2's ``data.train``) puts the user's training data."""

FACES_FOLDER = "data/faces"
"""Where ``params.yaml``'s ``data.folders.faces`` (sd2's ``data.evaluation.face``) puts the faces protocol's data."""

REVIEW_DECISIONS = "data/review/decisions.jsonl"
"""The reviewers' decisions file of the tiny project (``review.decisions``): real rows have no truth
for a simulated annotator, so people's decisions stand in, as the review widget writes them."""

HF_CACHE = ".hf-cache"
"""The project's tiny Hugging Face cache (inside the copy, ignored by DVC and git)."""


def write_dreambench_dataset(
    folder: str | os.PathLike, dreambench=None, *, image_size: int = 64, rows_per_subject: int = 4, seed: int = 0
):
    """Training rows in the project's dataset format from DreamBench's photos (see the module's note).

    Each row: ``x`` and ``y`` two different photos of one subject, resized to ``image_size``; the
    instruction one of its prompts; ``messages`` that prompt as CAFE is asked it, ``response`` an
    answer naming the prompt. Returns the :class:`~cafe_core.data.dataset.Dataset`.
    """
    from ..benchmarks.dreambench import cafe_request, load_dreambench
    from ..data.dataset import DatasetWriter, open_dataset
    from ..utils.images import load_image

    bench = dreambench if dreambench is not None else load_dreambench()
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    with DatasetWriter(folder, info={"made_by": "write_dreambench_dataset", "seed": seed}) as writer:
        for subject in bench.subjects:
            photos = [np.asarray(load_image(p).resize((image_size, image_size))) for p in subject.images]
            templates = bench.live_templates if subject.live else bench.object_templates
            for k in range(rows_per_subject):
                i, j = rng.choice(len(photos), size=2, replace=False)
                template = templates[int(rng.integers(len(templates)))]
                prompt = template.replace("{0} {1}", subject.cls)
                context = prompt.removeprefix(f"a {subject.cls}").strip() or None
                writer.add(
                    {
                        "id": f"{subject.name}-{k}",
                        "x": photos[i],
                        "y": photos[j],
                        "instruction": prompt,
                        "messages": [{"role": "user", "content": cafe_request(template, subject.cls)}],
                        "response": f"Here is your {subject.cls} {context or 'as it is'}.",
                        "kind": "declarative",
                        "teacher": "dreambench-photos",
                        "teacher_version": "1",
                        "seed": int(seed),
                        "subject": subject.name,
                        "subject_class": subject.cls,
                        "context": context,
                    }
                )
    return open_dataset(folder)


def write_faces_folder(folder: str | os.PathLike, *, people: int = 2, image_size: int = 64, seed: int = 0) -> Path:
    """A faces folder (:mod:`cafe_core.benchmarks.faces`): ``people`` people of two random photos
    each and three of E4T's kind of prompts. Returns the folder."""
    from PIL import Image

    folder, rng = Path(folder), np.random.default_rng(seed)
    for k in range(people):
        person = folder / f"person-{k}"
        person.mkdir(parents=True, exist_ok=True)
        for i in range(2):
            pixels = rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(person / f"{i}.png")
    prompts = ["a photo of {} as a chef", "a painting of {} in the style of Van Gogh", "{} wearing a santa hat"]
    (folder / "prompts.txt").write_text("\n".join(prompts) + "\n")
    return folder


def tiny_sd2_params(source: str | os.PathLike) -> dict:
    """``source``'s params.yaml under ``profile: sd2`` with every size shrunk to seconds."""
    raw = yaml.safe_load((Path(source) / "params.yaml").read_text())
    raw["profile"] = "sd2"
    raw["seeds"] = [0]
    raw["generator"].update(steps=2, batch_size=2, checkpoint_every=1, sample_every=2, sample_steps=2)
    for spec in raw["finetuned"].values():
        spec["steps"] = 1
    raw["assistant"].update(dialogues=16, val_dialogues=4, steps=2, batch_size=2, checkpoint_every=1, max_new_tokens=4)
    for spec in raw["assistants"].values():
        spec["lambdas"] = spec["lambdas"][:1]
    raw["guidance"].update(clip_scales=[3.0], dino_scales=[3.0], object_subjects=1, face_subjects=1, prompts=1)
    raw["evaluation"] = dict(object_subjects=2, face_subjects=1, prompts=2, images_per_prompt=1, references=1)
    raw["profile_overrides"]["sd2"]["evaluation"] = raw["evaluation"]  # not the paper's 30 subjects and 7 people
    raw["selfdistill"].update(requests=4, batch_size=2)
    # Random encoders score every pair near 0: the paper's thresholds (0.3, 0.6) would keep no row.
    raw["profile_overrides"]["sd2"]["teacher"].update(clip_threshold=-1.0, dino_threshold=-1.0)
    raw["profile_overrides"]["sd2"]["assistant"].update(batch_size=2)  # the paper's 128 > the tiny dataset
    raw["profile_overrides"]["sd2"]["generator"].update(batch_size=2)
    raw["review"]["decisions"] = REVIEW_DECISIONS
    return raw


def sd2_environment(root: str | os.PathLike, dreambench: str | os.PathLike | None = None) -> dict[str, str]:
    """The environment the project's stages run in: its tiny cache, offline, no model root, and
    DreamBench at ``dreambench`` (default: where :func:`dreambench_root` finds it from here)."""
    from ..benchmarks.dreambench import ENV_VAR, dreambench_root

    bench = Path(dreambench) if dreambench is not None else dreambench_root()
    return {
        "HF_HUB_CACHE": str(Path(root) / HF_CACHE),
        "HF_HUB_OFFLINE": "1",
        "CAFE_MODEL_ROOT": "",
        ENV_VAR: str(bench.resolve()),
    }


def write_tiny_sd2_project(root: str | os.PathLike, *, source: str | os.PathLike, dreambench=None) -> Path:
    """A git + DVC repository at ``root``: ``source``'s code, notebooks and pipeline, tiny sd2 params,
    the tiny checkpoints in ``root/.hf-cache``, the DreamBench training dataset and a faces folder.
    Returns ``root``."""
    from ..data.review import ReviewLog
    from .checkpoints import write_tiny_checkpoints

    root, source = Path(root), Path(source)
    root.mkdir(parents=True, exist_ok=True)
    for item in ("cafe_core", "notebooks"):
        shutil.copytree(source / item, root / item, ignore=shutil.ignore_patterns("__pycache__"))
    for item in ("dvc.yaml", "pyproject.toml", ".dvcignore"):
        shutil.copy(source / item, root / item)
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_sd2_params(source), sort_keys=False))
    (root / ".gitignore").write_text(f"{HF_CACHE}/\n")
    with (root / ".dvcignore").open("a") as ignore:
        ignore.write(f"\n{HF_CACHE}/\n")
    write_tiny_checkpoints(root / HF_CACHE, layout="hub")
    rows = len(write_dreambench_dataset(root / TRAINING_DATASET / "quadruplets", dreambench))
    write_faces_folder(root / FACES_FOLDER)
    # teacher_data numbers the rows it keeps q0000000, ... in order: a reviewer accepts three in four
    decisions = [(f"q{i:07d}", "reject" if i % 4 == 3 else "accept") for i in range(rows)]
    ReviewLog(root / REVIEW_DECISIONS).record_many(decisions, reviewer="tiny-project", seconds=1.0)
    dvc = shutil.which("dvc") or "dvc"
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"], [dvc, "config", "core.analytics", "false"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
    return root
