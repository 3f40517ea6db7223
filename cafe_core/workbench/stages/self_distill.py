"""Stage ``self_distill``: the stage-1 system makes its own training targets (paper 3.3, eq. 4),
the datasets ``selfdistill`` and ``union`` of table 3.

Stage 1 is the assistant and G trained on the automatically filtered teacher data (params
``selfdistill.assistant`` and its G). For each of ``selfdistill.requests`` teacher requests
(the photo x, the dialogue, the instruction) it predicts ``c_hat``, blends it with the base
text-to-image model's image of the instruction, ``c = (1 - lam) c_hat + lam E_c(x_ref)``, and
draws ``y = G(c, E_d(x))``. The automatic filter scores every target at ``teacher_data``'s
thresholds; rejected targets stay in the dataset as rows with their decisions, so the statistics
count them and a resumed run does not make them again. Each training seed's stage-1 system
makes its own dataset, ``selfdistill/seed-<s>``; ``union/seed-<s>`` lists its shards and the
teacher dataset's (a manifest only).

Generation runs on every process of an ``accelerate launch`` (each makes the requests its id
hashes to, :mod:`cafe_core.workbench.generation_run`), and a run killed and restarted loses and
duplicates nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ...data.dataset import compose, open_dataset
from ...data.filter import pair_scores
from ...models.encoders import ClipEncoder, DinoEncoder
from ...models.guidance import blend_embeddings
from ...pipeline import CafePipeline
from ...utils.digest import file_digest
from ...utils.files import atomic_write_json
from .. import tracking
from ..config import Params
from ..dataset_report import log_dataset_report
from ..generation_run import generate_dataset
from ..paths import ProjectPaths
from .common import generator_digest
from .drawing import PromptReferences, sampling
from .teacher_data import TEACHER_DATASET

__all__ = ["SELF_DATASET", "UNION_DATASET", "SelfDistiller", "self_distill_stage"]

logger = logging.getLogger(__name__)

SELF_DATASET = "selfdistill"
UNION_DATASET = "union"
TEACHER_NAME = "self-distill"
SECONDS = "seconds.json"
"""Generation seconds per process and run, beside each seed's dataset: table 3's cost column."""


@dataclass(frozen=True)
class Request:
    """One target to make: a teacher row's photo, dialogue and instruction."""

    id: str
    x: np.ndarray
    messages: list[dict]
    instruction: str
    provenance: dict


class SelfDistiller:
    """What every training seed's self-distillation shares: the teacher's requests, the filter's
    encoders and thresholds, and the base model's references (cached per prompt and seed)."""

    def __init__(self, params: Params, root: Path) -> None:
        self.params, self.root, self.paths = params, root, ProjectPaths(root)
        self.teacher = open_dataset(self.paths.dataset(TEACHER_DATASET))
        self.thresholds = json.loads(self.paths.filter_report.read_text())["thresholds"]
        model_root = self.paths.model_root(params.profile)
        self.eval_clip = ClipEncoder.from_pretrained(params.profile.eval_clip, model_root=model_root)
        self.eval_dino = DinoEncoder.from_pretrained(params.profile.eval_dino, model_root=model_root)
        self.references = PromptReferences.from_params(params, root)

    def make(self, seed: int, folder: Path, *, requests: int, lam: float, batch_size: int, accelerator=None):
        """The dataset of the first ``requests`` teacher requests drawn by training seed ``seed``'s
        stage-1 system with eq. 4 at ``lam``, at ``folder`` (resumed; restarted when its inputs
        changed). Returns it on the main process (None on the others)."""
        params, paths, sd = self.params, self.paths, self.params.selfdistill
        generator = params.assistants[sd.assistant].generator
        pipe = CafePipeline.from_params(params, self.root, assistant=sd.assistant, seed=seed, device="cpu")
        pipe.sampling = sampling(params, self.root)
        version = f"assistant {sd.assistant} + G {generator}, training seed {seed}, lam {lam}"
        info = {
            "made_by": "self_distill",
            "teacher_version": version,
            "thresholds": self.thresholds,
            # what the rows depend on: a change restarts the dataset instead of mixing old rows in
            "inputs": {
                "teacher": file_digest(self.teacher.folder / "manifest.json"),
                "generator": generator_digest(paths.generator(generator, seed)),
                "assistant": file_digest(paths.assistant(sd.assistant, seed) / "assistant.safetensors"),
            },
        }
        main = accelerator is None or accelerator.is_main_process
        if main:
            _restart_if_changed(folder, info)
        if accelerator is not None:
            accelerator.wait_for_everyone()
        make_rows = _row_maker(
            pipe, self.references, self.eval_clip, self.eval_dino, self.thresholds, lam, seed, version
        )
        start = time.perf_counter()
        dataset = generate_dataset(
            _requests(self.teacher, requests),
            make_rows,
            folder,
            info=info,
            batch_size=batch_size,
            accelerator=accelerator,
        )
        _add_seconds(folder, accelerator.process_index if accelerator is not None else 0, time.perf_counter() - start)
        if main:
            self.references.save()
        return dataset


def self_distill_stage(params: Params, root: Path, *, accelerator=None) -> dict[int, dict]:
    """Make the ``selfdistill`` dataset of every training seed (resuming what exists) and its
    ``union`` with the teacher's; returns, per seed, the rows made, kept, and the seconds spent."""
    from accelerate import Accelerator

    paths = ProjectPaths(root)
    sd = params.selfdistill
    accelerator = accelerator or Accelerator()
    distiller = SelfDistiller(params, root)
    thresholds = distiller.thresholds
    out = {}
    run = tracking.start_run("self_distill", params, log_params={"selfdistill": asdict(sd)}, root=root)
    with run if accelerator.is_main_process else contextlib.nullcontext():
        for seed in params.seeds:
            folder = paths.dataset(SELF_DATASET) / f"seed-{seed}"
            dataset = distiller.make(
                seed, folder, requests=sd.requests, lam=sd.lam, batch_size=sd.batch_size, accelerator=accelerator
            )
            accelerator.wait_for_everyone()
            if dataset is None:  # not the main process
                continue
            _write_union(paths, seed)
            seconds = _seconds(folder)
            kept = int(dataset.kept().sum())
            out[seed] = {"rows": len(dataset), "kept": kept, "generation_seconds": seconds}
            tracking.log_metrics({f"seed_{seed}/kept": kept, f"seed_{seed}/generation_seconds": seconds})
            stats = log_dataset_report(
                dataset,
                f"{SELF_DATASET}-seed-{seed}",
                {"clip_score": thresholds["clip_threshold"], "dino_score": thresholds["dino_threshold"]},
            )
            cost = {"seconds": seconds, "what": "process-seconds of generation on this machine"}
            atomic_write_json(
                paths.dataset_statistics(f"{SELF_DATASET}/seed-{seed}"), {**stats, **out[seed], "added_cost": cost}
            )
            union = open_dataset(paths.dataset(UNION_DATASET) / f"seed-{seed}")
            atomic_write_json(
                paths.dataset_statistics(f"{UNION_DATASET}/seed-{seed}"), {**union.statistics(), "added_cost": cost}
            )
    return out


def _requests(teacher, n: int) -> list[Request]:
    """The first ``n`` teacher rows as requests (every row, whatever the filter said of its target:
    the request is the photo and the instruction, and the stage-1 system makes a new target)."""
    if n < 1 or n > len(teacher):
        raise ValueError(f"selfdistill.requests must lie in [1, {len(teacher)}] (the teacher's rows), got {n}")
    names = ["id", "messages", "instruction", "subject", "subject_class", "context", "kind", "response", "seed"]
    t = teacher.table(names).slice(0, n).to_pydict()
    x = teacher.images("x", np.arange(n))
    return [
        Request(
            id=f"s-{t['id'][i]}",
            x=x[i],
            messages=t["messages"][i] or [{"role": "user", "content": t["instruction"][i]}],
            instruction=t["instruction"][i],
            provenance={k: t[k][i] for k in ("subject", "subject_class", "context", "kind", "response", "seed")},
        )
        for i in range(n)
    ]


def _row_maker(pipe: CafePipeline, references, eval_clip, eval_dino, thresholds: dict, lam: float, seed: int, version):
    """``make_rows`` of :func:`generate_dataset`: eq. 4's targets of a batch of requests, scored."""

    def make_rows(batch: list[Request]) -> list[dict]:
        photos = [r.x for r in batch]
        _, c_hat = pipe.predict(photos, [r.messages for r in batch])
        draw_seeds = [int(r.provenance["seed"] or 0) + 7919 * seed for r in batch]
        x_ref = references([r.instruction for r in batch], seed=seed)
        with torch.inference_mode():
            c_ref = pipe.clip.image_embeds(x_ref).float()
        y = pipe.draw(blend_embeddings(c_hat, c_ref, lam), photos, seed=draw_seeds)
        clip_sim, dino_sim = pair_scores(
            np.stack(photos), [r.instruction for r in batch], y, eval_clip, eval_dino, batch_size=len(batch)
        )
        return [
            {
                **r.provenance,
                "id": r.id,
                "x": r.x,
                "y": y[i],
                "instruction": r.instruction,
                "messages": r.messages,
                "teacher": TEACHER_NAME,
                "teacher_version": version,
                "seed": draw_seeds[i],
                "clip_score": float(clip_sim[i]),
                "dino_score": float(dino_sim[i]),
                "clip_pass": bool(clip_sim[i] >= thresholds["clip_threshold"]),
                "dino_pass": bool(dino_sim[i] >= thresholds["dino_threshold"]),
            }
            for i, r in enumerate(batch)
        ]

    return make_rows


def _restart_if_changed(folder: Path, info: dict) -> None:
    """Remove what an earlier run made from other inputs (params, thresholds, stage-1 models)."""
    import shutil

    written = [json.loads(p.read_text()).get("info") for p in folder.glob("parts/rank-*/manifest.json")]
    if any(w != json.loads(json.dumps(info)) for w in written):
        logger.warning("%s was made from other inputs: starting it again", folder)
        shutil.rmtree(folder)


def _add_seconds(folder: Path, rank: int, seconds: float) -> None:
    """Add this run's generation seconds of process ``rank`` to the folder's account."""
    path = folder / "parts" / f"rank-{rank:05d}" / SECONDS
    spent = json.loads(path.read_text())["seconds"] if path.is_file() else 0.0
    atomic_write_json(path, {"seconds": spent + seconds})


def _seconds(folder: Path) -> float:
    """Process-seconds of generation over every run and process (a process's wall time, each on its share)."""
    return float(sum(json.loads(p.read_text())["seconds"] for p in (folder / "parts").glob(f"rank-*/{SECONDS}")))


def _write_union(paths: ProjectPaths, seed: int) -> None:
    """``union/seed-<s>/manifest.json``: the teacher's shards and ``selfdistill/seed-<s>``'s, by
    relative path; its info holds a digest of every shard's bytes, so a change in either changes it
    (and DVC retrains the G that reads it)."""
    names = (TEACHER_DATASET, f"{SELF_DATASET}/seed-{seed}")
    digests = {}
    for name in names:
        digest = hashlib.sha256()
        for shard in open_dataset(paths.dataset(name)).shards:
            digest.update(file_digest(shard).encode())
        digests[name] = digest.hexdigest()[:16]
    info = {"made_by": "self_distill", "union_of": digests}
    compose(paths.dataset(UNION_DATASET) / f"seed-{seed}", [paths.dataset(name) for name in names], info=info)
