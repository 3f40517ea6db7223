"""Stages ``evaluate@<variant>``, ``evaluate_real_images``, ``evaluate_gt_embedding``.

The DreamBench protocol on the evaluation source's cases (``params.yaml: data.evaluation``):
CAFE-mini's held-out subjects, or DreamBench's real photos. Every variant draws through
:class:`~cafe_core.pipeline.CafePipeline`: the fast path with a reference image, or chat.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ...benchmarks.metrics import (
    clip_i_similarity,
    clip_t_similarity,
    dino_similarity,
    fidelity_figures,
    identity_similarity,
)
from ...benchmarks.samples import score_samples, write_samples
from ...data.cases import EvalCase
from ...data.sources import DataSource, DataUnavailable
from ...models.encoders import ClipEncoder, DinoEncoder, load_face_embedder
from ...pipeline import CafePipeline
from ...utils.digest import config_hash, file_digest
from ...utils.files import atomic_write_json
from .. import tracking
from ..code_deps import code_digest
from ..config import Params, VariantSpec, to_dict
from ..evaluation_sources import evaluation_source
from ..paths import ProjectPaths
from ..plots import image_grid, save_figure
from ..processes import side_by_side
from .common import GT_EMBEDDING, REAL_IMAGES, TARGET_SEEDS
from .drawing import PromptReferences, draw_from_prompts, reference_pipeline, sampling

__all__ = ["Judges", "evaluate_variant"]

logger = logging.getLogger(__name__)


def evaluate_variant(params: Params, root: Path, variant: str) -> dict[str, dict[str, float]]:
    """DINO / CLIP-I / CLIP-T on held-out objects, ID / CLIP-T on held-out faces, for one variant.

    Every trained variant is evaluated once per training seed (``params.seeds``: its G and M of
    that seed) on the same cases and noise, so seeds and subjects are crossed; each per-subject
    row in ``subjects.json`` names its ``seed`` (None for ``real_images``, which trains nothing),
    and ``metrics.json`` holds the mean over every (seed, subject) row. Where c comes from:
    the assistant's c_hat for the CAFE-phrased request (``variants.<v>.assistant``; with
    ``quality`` its words are judged too, quality.json), the base model's image of the plain
    prompt (no assistant: G alone, eq. 4's x_ref), or E_c of the true target render
    (``gt_embedding``). ``real_images`` scores ground-truth renders: the ceiling. d is always E_d
    of the subject photo x. A finished seed is kept (``data/evaluations``), so a killed stage
    resumes at the next one; the seeds left are scored ``compute.seed_processes`` at a time, a
    process each.
    """
    known = [*params.variants, GT_EMBEDDING, REAL_IMAGES]
    if variant not in known:
        raise KeyError(f"unknown variant {variant!r} (params.yaml key 'variants'); known: {', '.join(known)}")
    paths = ProjectPaths(root)
    source = evaluation_source(params, root)
    seeds = [None] if variant == REAL_IMAGES else list(params.seeds)
    run_params = _run_params(params, root, variant, source)
    with tracking.start_run(f"evaluate@{variant}", params, log_params=run_params, root=root):
        scorer = _Scorer(params, root, source)
        rows, grids, qualities = [], {}, []
        peer = paths.variant_peer_samples(variant)
        if peer.exists():
            shutil.rmtree(peer)
        peer.mkdir(parents=True)  # stays empty for a row the data cannot give (real photos: no true images)
        scored = scorer.score_side_by_side(variant, seeds)
        for seed in seeds:
            try:
                seed_rows, seed_grids, quality = scored[seed] if seed in scored else scorer.seed(variant, seed)
            except DataUnavailable as missing:
                if variant not in (REAL_IMAGES, GT_EMBEDDING):
                    raise
                # Real photos have no ground-truth targets: the ceiling rows are left empty, and the
                # tables and claims that need them say so, while the trained variants run on.
                logger.warning("%s: %s; its row stays empty", variant, missing)
                tracking.set_tags({"cafe.unavailable": str(missing)})
                break
            rows += seed_rows
            shutil.copytree(scorer.samples(variant, seed), peer / (f"seed-{seed}" if seed is not None else "truth"))
            grids = grids or seed_grids  # the first seed's drawings
            if quality is not None:
                qualities.append(quality)
        result = _means(rows)
        out = paths.variant(variant)
        samples = paths.variant_samples(variant)
        samples.mkdir(parents=True, exist_ok=True)
        for domain, png in grids.items():
            shutil.copyfile(png, samples / f"{domain}.png")
            tracking.log_image(np.asarray(Image.open(png).convert("RGB")), f"samples_{domain}")
        tracking.log_metrics({f"{d}/{k}": v for d, scores in result.items() for k, v in scores.items()})
        if variant in params.variants:  # a DVC metrics file of every variant: empty where words are not judged
            quality = _mean_quality(qualities) if qualities else {}
            atomic_write_json(out / "quality.json", {variant: {d: {"quality": q} for d, q in quality.items()}})
            tracking.log_metrics(
                {f"{d}/quality/{k}": v for d, q in quality.items() for k, v in q.items() if isinstance(v, (int, float))}
            )
        # Keyed by the variant's name (both.object.DINO), which DVC prints bare; shared keys would
        # be headed by the whole file path. Written last: the variant is complete.
        atomic_write_json(paths.variant_subjects(variant), rows)
        path = atomic_write_json(paths.variant_metrics(variant), {variant: result})
        tracking.set_tags({"cafe.metrics_digest": file_digest(path)})  # what a table run links back to
    return result


def _run_params(params: Params, root: Path, variant: str, source: DataSource) -> dict:
    """What a variant's evaluation run records: its data, evaluation sizes, sampling (with the
    guidance scales chosen on validation), seeds and its spec."""
    out = {"variant": variant, "data": source.name, "evaluation": to_dict(params.evaluation)}
    if variant != REAL_IMAGES:
        guidance = params.variants[variant].guidance if variant in params.variants else "both"
        out.update(sampling=asdict(sampling(params, root, guidance)), seeds=params.seeds)
    if variant in params.variants:
        spec = params.variants[variant]
        out.update(asdict(spec), **asdict(params.generators[spec.generator]))
    return out


def _means(rows: list[dict]) -> dict[str, dict[str, float]]:
    """``{domain: {metric: mean over every (seed, subject) row}}``."""
    result = {}
    for domain in dict.fromkeys(r["domain"] for r in rows):
        mine = [r for r in rows if r["domain"] == domain]
        metrics = dict.fromkeys(k for r in mine for k in r if k not in _LABELS)
        result[domain] = {k: float(np.mean([r[k] for r in mine if k in r])) for k in metrics}
    return result


def _mean_quality(qualities: list[dict]) -> dict:
    """Each training seed's quality figures, averaged (numbers) or kept (labels such as the identity metric)."""
    out = {}
    for domain in qualities[0]:
        figures = [q[domain] for q in qualities]
        out[domain] = {
            k: float(np.mean([f[k] for f in figures])) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
            for k, v in figures[0].items()
        }
        out[domain]["seeds"] = len(figures)
    return out


_LABELS = ("subject", "domain", "seed")


class Judges:
    """What scores a drawing: the evaluation CLIP and DINO, the face-identity model, and the data
    source's own verdicts where it knows the truth (CAFE-mini's fidelity probe)."""

    def __init__(self, params: Params, root: Path, source: DataSource) -> None:
        self.source = source
        model_root = ProjectPaths(root).model_root(params.profile)
        self.eval_clip = ClipEncoder.from_pretrained(params.profile.eval_clip, model_root=model_root)
        self.eval_dino = DinoEncoder.from_pretrained(params.profile.eval_dino, model_root=model_root)
        self.face = load_face_embedder(params.profile.face_id, model_root=model_root)

    def __call__(self, case: EvalCase, images: np.ndarray) -> tuple[dict[str, float], list[dict]]:
        """DreamBench's scores of one drawing of every prompt of ``case`` (CLIP-T against the
        prompts; DINO and CLIP-I against the subject's photos for objects, ID for faces), and the
        source's fidelity verdicts (empty where it cannot judge)."""
        refs = case.reference_images
        scores = {"CLIP-T": clip_t_similarity(self.eval_clip, images, [p.prompt for p in case.prompts])}
        if case.domain == "object":
            scores["DINO"] = dino_similarity(self.eval_dino, images, refs)
            scores["CLIP-I"] = clip_i_similarity(self.eval_clip, images, refs)
        else:
            scores["ID"] = identity_similarity(self.face, images, refs)
        return scores, self.source.judge_fidelity(case, images) or []


def _score_seed(params: Params, root: Path, variant: str, seed: int | None) -> tuple:
    """:meth:`_Scorer.seed` in a process of its own (picklable by name)."""
    return _Scorer(params, root, evaluation_source(params, root)).seed(variant, seed)


class _Scorer:
    """Draws and scores every case of one training seed; keeps each finished seed in ``data/evaluations``."""

    def __init__(self, params: Params, root: Path, source: DataSource) -> None:
        self.params, self.root, self.source = params, root, source
        self.judges = Judges(params, root, source)
        self._caches: dict[tuple[str, int | None], Path] = {}  # the key hashes the model weights: once each

    def seed(self, variant: str, seed: int | None) -> tuple[list[dict], dict[str, Path], dict | None]:
        """``(per-subject rows, {domain: sample grid PNG}, quality or None)`` of training seed ``seed``.

        A finished seed is kept as its scores (JSON) beside one sample-grid PNG per domain, the
        scores written last: a seed with its JSON is complete.
        """
        cache = self._cache(variant, seed)
        grids = {d: cache.with_name(f"{cache.stem}-{d}.png") for d in self.source.domains}
        if cache.is_file():
            kept = json.loads(cache.read_text())
            logger.info("evaluate@%s: training seed %s was scored before (%s)", variant, seed, cache.name)
            tracking.record_work(built=False)
            return kept["rows"], grids, kept["quality"]
        drawer = _Drawer.for_variant(self.params, self.root, variant, self.source, seed)
        samples = self.samples(variant, seed)
        if samples.exists():  # an earlier, killed attempt: its images are drawn again
            shutil.rmtree(samples)
        rows, cells = self._score(variant, seed, drawer, samples)
        j = self.judges
        quality = drawer.finish(j.eval_clip, j.eval_dino, j.face)
        for domain, (shown, titles) in cells.items():
            save_figure(image_grid(shown, col_titles=titles), grids[domain])
        score_samples(samples, j.eval_clip, j.eval_dino, face=j.face)
        atomic_write_json(cache, {"rows": rows, "quality": quality})
        tracking.record_work(built=True)
        return rows, grids, quality

    def score_side_by_side(self, variant: str, seeds: list[int | None]) -> dict[int | None, tuple]:
        """Score the seeds not scored before ``compute.seed_processes`` at a time, each in a process
        of its own (:func:`~cafe_core.workbench.processes.side_by_side`). Returns each one's answer
        of :meth:`seed`; empty where they are to be scored in turn (one process, or one seed left),
        or where the data cannot give a seed (:meth:`seed` meets that again, in turn, and says so)."""
        pending = [seed for seed in seeds if not self._cache(variant, seed).is_file()]
        processes = self.params.compute.seed_processes
        if processes <= 1 or len(pending) <= 1:
            return {}
        scored = {}
        spec = self.params.variants.get(variant)
        if spec is not None and spec.assistant is None:  # G alone: its first seed draws the references all reuse
            scored[pending[0]] = self.seed(variant, pending.pop(0))
        jobs = [(self.params, self.root, variant, seed) for seed in pending]
        try:
            scored.update(zip(pending, side_by_side(_score_seed, jobs, processes=processes), strict=True))
        except DataUnavailable:
            return {}
        return scored

    def samples(self, variant: str, seed: int | None) -> Path:
        """The seed's images in DreamBench++'s layout, kept beside its scores (same key)."""
        cache = self._cache(variant, seed)
        return cache.with_name(f"{cache.stem}-samples")

    def _cache(self, variant: str, seed: int | None) -> Path:
        """Where a finished seed is kept: keyed by what its scores depend on (models, settings, code)."""
        if (variant, seed) not in self._caches:
            self._caches[variant, seed] = self._cache_path(variant, seed)
        return self._caches[variant, seed]

    def _cache_path(self, variant: str, seed: int | None) -> Path:
        p = self.params
        paths = ProjectPaths(self.root)
        spec = p.variants.get(variant)
        models = []  # the weights' content: a missing model fails later, in the drawer, with the stage to run
        if seed is not None:
            generator = spec.generator if spec else p.variants[p.fidelity.variant].generator
            models.append(_identity(paths.generator(generator, seed) / "cafe_conditioning.safetensors"))
            models.append(_identity(paths.generator(generator, seed) / "unet" / "diffusion_pytorch_model.safetensors"))
            if spec is not None and spec.assistant is not None:
                models.append(_identity(paths.assistant(spec.assistant, seed) / "assistant.safetensors"))
        key = config_hash(
            variant,
            seed,
            models,
            to_dict(spec) if spec else None,
            to_dict(p.evaluation),
            asdict(sampling(p, self.root)) if seed is not None else None,
            p.seed,
            self.source.name,
            code_digest(__name__),
        )
        return paths.data / "evaluations" / f"{variant}-seed-{seed}-{key}.json"

    def _score(self, variant: str, seed: int | None, drawer: _Drawer, samples: Path) -> tuple[list[dict], dict]:
        """Draw and score every case, writing each image to ``samples`` (DreamBench++'s layout, beside
        the photo it was conditioned on and its plain prompt). Where the source knows the truth
        (CAFE-mini), the fidelity probe's verdicts add ``attributes``, ``all_attributes``,
        ``context`` and ``attribute.<name>``."""
        e, source = self.params.evaluation, self.source
        rows, grids = [], {}
        for domain in source.domains:
            n_subjects, n_prompts = e.subjects_of(domain), e.prompts_of(domain)
            cases = source.eval_cases(domain, n_subjects, n_prompts, self.params.seed, e.references)
            shown = []
            for case in tqdm(cases, desc=f"{variant} seed {seed} {domain}", disable=None):
                scores: dict[str, list[float]] = {"DINO": [], "CLIP-I": [], "CLIP-T": [], "ID": []}
                verdicts: list[dict] = []
                for k in range(e.images_of(domain)):
                    images = drawer(case, k)
                    write_samples(
                        samples,
                        (
                            (f"{domain}-{case.subject}", i, k, np.asarray(case.input_image), image, prompt.prompt)
                            for i, (image, prompt) in enumerate(zip(images, case.prompts, strict=True))
                        ),
                    )
                    drawing, judged = self.judges(case, images)
                    for name, value in drawing.items():
                        scores[name].append(value)
                    verdicts += judged
                    if k == 0 and len(shown) < 6:
                        shown.append([np.asarray(case.input_image), *images[:8]])
                row = {k: float(np.mean(v)) for k, v in scores.items() if v}
                if verdicts:
                    row.update(fidelity_figures(verdicts))
                rows.append({"subject": case.subject, "domain": domain, "seed": seed, **row})
            grids[domain] = (shown, ["photo x"] + [p.label for p in cases[0].prompts][:8])
        return rows, grids


def _identity(path: Path) -> str | None:
    return file_digest(path) if path.is_file() else None


class _Drawer:
    """Draws a case's prompts for one variant and training seed; ``finish`` returns its extra figures (or None)."""

    def __init__(self, params: Params, source: DataSource):
        self.params, self.source = params, source

    @staticmethod
    def for_variant(params: Params, root: Path, variant: str, source: DataSource, seed: int | None) -> _Drawer:
        if variant == REAL_IMAGES:
            return _Drawer(params, source)
        if variant == GT_EMBEDDING:
            return _TrueEmbeddingDrawer(params, root, source, seed)
        spec = params.variants[variant]
        if spec.assistant is None:
            return _ReferenceDrawer(params, root, source, spec.generator, seed, spec.guidance)
        return _AssistantDrawer(params, root, source, spec, seed)

    def __call__(self, case: EvalCase, k: int) -> np.ndarray:
        """Ground-truth images of the case's prompts (the ceiling row), ``k``-th set of scenes."""
        seeds = [self.params.seed + 7919 * k + i for i in range(len(case.prompts))]
        return self.source.target_images(case, seeds)

    def finish(self, eval_clip, eval_dino, face) -> dict | None:
        return None


class _ReferenceDrawer(_Drawer):
    """G alone: the fast path with the base model's image of the plain prompt as the reference."""

    def __init__(self, params: Params, root: Path, source: DataSource, generator: str, seed: int, guidance: str):
        super().__init__(params, source)
        self.pipe = reference_pipeline(params, root, generator, seed, guidance)
        self.references = PromptReferences.from_params(params, root)

    def __call__(self, case: EvalCase, k: int) -> np.ndarray:
        prompts = [p.prompt for p in case.prompts]
        return draw_from_prompts(self.pipe, self.references, case.input_image, prompts, seed=self.params.seed + k)

    def finish(self, eval_clip, eval_dino, face) -> None:
        self.references.save()


class _TrueEmbeddingDrawer(_Drawer):
    """The fast path with the true target image as the reference: c = E_c(y), an oracle assistant."""

    def __init__(self, params: Params, root: Path, source: DataSource, seed: int):
        super().__init__(params, source)
        generator = params.variants[params.fidelity.variant].generator  # the full system's G
        self.pipe = reference_pipeline(params, root, generator, seed)

    def __call__(self, case: EvalCase, k: int) -> np.ndarray:
        targets = super().__call__(case, k + TARGET_SEEDS)  # other scenes than the ceiling row's
        return self.pipe.generate(case.input_image, targets, seed=self.params.seed + 1000 * k)[0]


class _AssistantDrawer(_Drawer):
    """Chat: the CAFE-phrased request -> response and c_hat -> G; collects what the quality figures read."""

    def __init__(self, params: Params, root: Path, source: DataSource, spec: VariantSpec, seed: int):
        super().__init__(params, source)
        self.pipe = CafePipeline.from_params(
            params, root, assistant=spec.assistant, generator=spec.generator, seed=seed, device="cpu"
        )
        self.pipe.sampling = sampling(params, root, spec.guidance)
        self.quality = spec.quality
        self.cases, self.turns = [], []

    def __call__(self, case: EvalCase, k: int) -> np.ndarray:
        chats = [[{"role": "user", "content": p.cafe_prompt}] for p in case.prompts]
        photos = [case.input_image] * len(chats)
        texts, c_hat, images, _ = self.pipe.respond(photos, chats, seed=self.params.seed + 1000 * k)
        if self.quality:
            try:
                targets = super().__call__(case, k + TARGET_SEEDS)
            except DataUnavailable:  # real photos: no true target to compare c_hat with
                targets = None
            self.turns.append((case, texts, c_hat, images, targets))
            if k == 0:
                self.cases.append(case)
        return images

    def finish(self, eval_clip, eval_dino, face) -> dict | None:
        if not self.quality or any(turn[-1] is None for turn in self.turns):
            return None
        seed = self.params.seed
        quality = self.source.assistant_quality
        return quality(
            self.pipe, self.turns, self.cases, eval_clip, eval_dino, face, seed=seed, target_seeds=TARGET_SEEDS
        )
