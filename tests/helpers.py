"""Helpers shared by the tests: git, tiny params (tiny models and the Hub cache layout: `cafe_core.testing`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def git_commit(root: Path, message: str = "state") -> str:
    """Commit everything in the git repository ``root`` as a throwaway author; returns the commit."""
    who = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    env = {**os.environ, **who}
    for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", message]):
        subprocess.run(cmd, cwd=root, env=env, capture_output=True, check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()


def tiny_raw(steps: int = 4) -> dict:
    """params.yaml with every size shrunk so the whole pipeline runs in seconds."""
    import yaml

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    raw["pretrain"].update(dataset_size=600, dialogues=300, checkpoint_every=2)
    for name in ("clip", "clip_eval", "clip_small", "dino", "dino_eval", "dino_small", "face_id", "lm"):
        raw["pretrain"][name].update(steps=steps, batch_size=32)
    raw["pretrain"]["t2i"].update(steps=steps, batch_size=8, sample_steps=3)
    raw["fidelity"]["probe"].update(steps=steps, batch_size=32, renders=300, eval_renders=120, checkpoint_every=2)
    raw["world_eval"] = dict(retrieval_images=40, views_per_subject=1, face_pairs=40, lm_dialogues=20, t2i_samples=10)
    raw["teacher"].update(quadruplets=400, clip_threshold=-1.0, dino_threshold=-1.0)  # tiny encoders: keep all
    raw["generator"].update(steps=steps, batch_size=8, checkpoint_every=2, sample_every=steps, sample_steps=3)
    for spec in raw["finetuned"].values():
        spec["steps"] = 2
    raw["assistant"].update(
        dialogues=120, val_dialogues=6, steps=steps, batch_size=8, checkpoint_every=2, max_new_tokens=12
    )
    raw["assistants"] = {
        "mse": {"distance": "mse", "lambdas": [0.5, 2.0], "generator": "main"},
        "neg_cosine": {"distance": "neg_cosine", "lambdas": [1.0], "generator": "main"},
        "mse_clip_small": {"distance": "mse", "lambdas": [1.0], "generator": "clip_small"},
    }
    raw["seeds"] = [0, 1]  # two training seeds: every stage's seed loop runs, and the lambda a later seed inherits
    raw["compute"]["seed_processes"] = 1  # seeds in turn: a process started per seed costs more than tiny Gs train
    raw["guidance"].update(clip_scales=[1.0, 3.0], dino_scales=[3.0], object_subjects=2, face_subjects=2, prompts=2)
    raw["evaluation"] = dict(object_subjects=2, face_subjects=2, prompts=2, images_per_prompt=1, references=2)
    raw["selfdistill"].update(requests=24, batch_size=8)
    return raw


def random_photo(seed: int):
    """A random uint8 (32, 32, 3) photo."""
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def spy_side_by_side(monkeypatch, module: str) -> list[list]:
    """Record the training seeds that ``module``'s stage hands to ``side_by_side`` (each job's fourth
    argument), which still runs them: proof that they ran in worker processes, not in turn."""
    import importlib

    from cafe_core.workbench.processes import side_by_side

    calls: list[list] = []

    def spy(task, jobs, **kwargs):
        calls.append([job[3] for job in jobs])
        return side_by_side(task, jobs, **kwargs)

    monkeypatch.setattr(importlib.import_module(module), "side_by_side", spy)
    return calls
