"""Every location the workbench reads or writes: ``models/``, ``data/``, ``results/``, ``runs/``, MLflow.

Stages, notebooks, the pipeline loader and the tests take their paths from one
:class:`ProjectPaths`, so a folder is named once: moving one is a one-line change here
(and in ``dvc.yaml``, whose outputs a test checks against these names).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProjectPaths"]


@dataclass(frozen=True)
class ProjectPaths:
    """The project's folders, all below ``root`` (the folder holding ``params.yaml``)."""

    root: Path

    def __init__(self, root: str | os.PathLike) -> None:
        object.__setattr__(self, "root", Path(root))

    # --- models -----------------------------------------------------------------------------------

    @property
    def models(self) -> Path:
        return self.root / "models"

    def model_root(self, profile) -> Path | None:
        """Where the profile's named checkpoints live (mini: ``models/world``); None: real
        checkpoints, resolved through ``CAFE_MODEL_ROOT`` or the Hugging Face cache."""
        return self.root / profile.model_root if profile.model_root else None

    def foundation_model(self, role: str) -> Path:
        """``models/world/<role>``: the output of ``pretrain_world`` for a foundation model's role
        (:data:`~cafe_core.workbench.config.ROLES`): mini's pretrained model, or a real profile's
        record of its checkpoint."""
        return self.models / "world" / role

    def generator(self, name: str, seed: int) -> Path:
        """G ``name`` trained with training seed ``seed``: ``models/generator/<name>/seed-<seed>``."""
        return self.models / "generator" / name / f"seed-{seed}"

    def assistant(self, name: str, seed: int) -> Path:
        """M ``name`` (V, H and [GEN]) of training seed ``seed``: ``models/assistant/<name>/seed-<seed>``."""
        return self.models / "assistant" / name / f"seed-{seed}"

    def checkpoints(self, kind: str) -> Path:
        """Resumable checkpoints of unfinished training runs of ``kind`` (generator, assistant, world)."""
        base = {
            "world": self.models / "world",
            "generator": self.models / "generator",
            "assistant": self.models / "assistant",
        }
        return base[kind] / ".checkpoints"

    # --- data -------------------------------------------------------------------------------------

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def world_renders(self) -> Path:
        """Cached renders of the CAFE-mini world (pretraining and probes)."""
        return self.data / "world"

    @property
    def teacher_cache(self) -> Path:
        """The teacher's quadruplets, before filtering."""
        return self.data / "teacher"

    def dataset(self, name: str) -> Path:
        """A dataset folder (:mod:`cafe_core.data.dataset`): ``teacher`` is every teacher quadruplet
        with the automatic filter's scores and decisions (``dvc.yaml``: output of ``teacher_data``);
        G trains on the rows it keeps."""
        return self.data / "datasets" / name

    @property
    def features(self) -> Path:
        """Cached features of the frozen encoders."""
        return self.data / "features"

    @property
    def dialogues(self) -> Path:
        """Cached dialogue sets of the assistant."""
        return self.data / "assistant"

    def references(self, key: str) -> Path:
        """Cached reference images drawn by the base text-to-image model ``key``."""
        return self.data / "references" / f"{key}.safetensors"

    # --- results ----------------------------------------------------------------------------------

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def world_results(self) -> Path:
        """Learned-ness figures and timings of the world models."""
        return self.results / "world"

    @property
    def filter_report(self) -> Path:
        return self.results / "teacher" / "filter.json"

    def dataset_statistics(self, name: str) -> Path:
        """What :meth:`cafe_core.data.dataset.Dataset.statistics` says of dataset ``name``."""
        return self.results / "datasets" / f"{name}.json"

    def variant(self, name: str) -> Path:
        """An evaluated variant's folder: ``metrics.json`` (written last), ``quality.json``, ``samples/``."""
        return self.results / "variants" / name

    def variant_metrics(self, name: str) -> Path:
        """A variant's mean scores, keyed by its name and domain (``both.object.CLIP-T``): a DVC metrics file."""
        return self.variant(name) / "metrics.json"

    def variant_subjects(self, name: str) -> Path:
        """A variant's scores per held-out subject, which the intervals resample."""
        return self.variant(name) / "subjects.json"

    def variant_peer_samples(self, name: str) -> Path:
        """Every image a variant drew, per training seed, in DreamBench++'s layout
        (:mod:`cafe_core.benchmarks.samples`): ``seed-<s>/{src_image,tgt_image,text}/``, with
        ``scores.jsonl`` and ``summary.json``; what another harness reads, beside a peer's folder."""
        return self.variant(name) / "dreambench"

    def variant_samples(self, name: str) -> Path:
        """A variant's sample grids, ``<domain>.png``: a DVC-cached output and image plot."""
        return self.variant(name) / "samples"

    @property
    def fidelity_results(self) -> Path:
        """The fidelity probe's accuracy (``probe.json``) and the full system's figures (``metrics.json``)."""
        return self.results / "fidelity"

    def assistant_selection(self, name: str) -> Path:
        """The lambda grid of assistant ``name`` and the lambda chosen on validation, per training seed."""
        return self.results / "assistant" / f"{name}.json"

    @property
    def guidance_grid(self) -> Path:
        """The guidance scales searched on validation subjects and the pair chosen: what every draw of G uses."""
        return self.results / "guidance" / "grid.json"

    def ablation(self, target: str) -> Path:
        """An ablation table's folder (``table.md``, ``table.csv``)."""
        return self.results / target

    # --- runs and tracking ------------------------------------------------------------------------

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    @property
    def runs(self) -> Path:
        """Executed copies of the stage notebooks."""
        return self.root / "runs"

    @property
    def mlflow_store(self) -> Path:
        """The embedded MLflow store (SQLite), reached by an absolute URI from any working directory."""
        return self.root / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        """Where MLflow keeps the runs' images and files."""
        return self.root / "mlartifacts"
