"""One function per DVC stage after world pretraining; the notebooks call these and plot.

teacher_data -> train_generator@<name> -> evaluate_variant@<variant> -> ablation_table(<target>)
                              \-> train_assistant@<name> -> evaluate_variant@<assistant> (table 4)

Every stage reads `params.yaml` through `Params`, writes atomically, and can be killed and
run again: training resumes from its checkpoint, cached features and data are reused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from . import tracking
from .config import Params, to_dict
from .data import cached_features, config_hash
from .dreambench import (
    ProtocolRow,
    clip_i_similarity,
    clip_t_similarity,
    dino_similarity,
    identity_similarity,
    mini_eval_cases,
    write_table,
)
from .files import atomic_save_safetensors, atomic_write_json, publish_dir
from .plots import image_grid
from .pretrain import make_world
from .teacher import (
    FilterConfig,
    Teacher,
    TeacherConfig,
    apply_filter,
    calibrate_thresholds,
    filter_scores,
    make_quadruplets,
)

logger = logging.getLogger(__name__)

REAL_IMAGES = "real_images"  # the ceiling variant: ground-truth renders scored like generations


def _model_root(params: Params, root: Path) -> Path | None:
    return root / params.profile.model_root if params.profile.model_root else None


def _encoder_key(params: Params, root: Path, name: str) -> str:
    """Identity of a checkpoint for feature caches: its pretraining marker, else its resolved path."""
    from .hub import resolve_model

    path = resolve_model(name, model_root=_model_root(params, root))
    marker = path / "cafe_pretrain.json"
    return json.loads(marker.read_text())["key"] if marker.is_file() else str(path)


# --- teacher data and the automatic filter -------------------------------------------------


def teacher_data(params: Params, root: Path) -> dict:
    """Make teacher quadruplets of training subjects, score them, filter; returns the filter report."""
    from .encoders import ClipEncoder, DinoEncoder

    t = params.teacher
    world = make_world(params)
    teacher = Teacher(TeacherConfig(t.identity_drift_p, t.ignore_instruction_p, t.artefact_p, seed=params.seed))
    quads = make_quadruplets(world, teacher, t.quadruplets, split="train", seed=params.seed, cache_dir=root / "data" / "teacher")
    model_root = _model_root(params, root)
    # The paper filters with its evaluation encoders (CLIP ViT-B/32, DINO ViT-S/16), not E_c / E_d.
    clip = ClipEncoder.from_pretrained(params.profile.eval_clip, model_root=model_root)
    dino = DinoEncoder.from_pretrained(params.profile.eval_dino, model_root=model_root)
    scores = filter_scores(quads, clip, dino, seed=params.seed)
    calibration = calibrate_thresholds(scores, quads.failures, level=t.calibration_level)
    chosen = FilterConfig(
        clip_threshold=t.clip_threshold if t.clip_threshold is not None else calibration.filter.clip_threshold,
        dino_threshold=t.dino_threshold if t.dino_threshold is not None else calibration.filter.dino_threshold,
    )
    keep = apply_filter(scores, chosen)
    kept = quads.select(keep)
    atomic_save_safetensors(
        {"x": kept.x, "y": kept.y, "subject_ids": kept.subject_ids, "context_ids": kept.context_ids},
        root / "data" / "teacher_filtered" / "filtered.safetensors",
    )
    failures = np.array(quads.failure_names())
    report = {
        "thresholds": asdict(chosen),
        "calibrated": t.clip_threshold is None or t.dino_threshold is None,
        "quadruplets": len(quads),
        "kept": int(keep.sum()),
        "kept_fraction": round(float(keep.mean()), 4),
        "rejected_by_failure_mode": {
            mode: round(float(1 - keep[failures == mode].mean()), 4) for mode in sorted(set(failures))
        },
        "failed_share_before": round(float(np.mean(failures != "none")), 4),
        "failed_share_after": round(float(np.mean(failures[keep] != "none")), 4) if keep.any() else None,
        "calibration": calibration.to_dict(),
    }
    atomic_write_json(root / "results" / "teacher" / "filter.json", report)
    return report


def load_filtered(root: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    path = root / "data" / "teacher_filtered" / "filtered.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `dvc repro teacher_data` first")
    return load_file(path)


# --- training G ----------------------------------------------------------------------------------


def generator_dir(root: Path, name: str) -> Path:
    return root / "models" / "generator" / name


def train_generator_stage(params: Params, root: Path, name: str, *, accelerator=None) -> dict:
    """Train generator `name` (its encoders from `params.generators`) on the filtered teacher data."""
    from accelerate import Accelerator

    from .diffusion import CafeGenerator, TextToImage
    from .encoders import ClipEncoder, DinoEncoder
    from .train import GeneratorTraining, train_generator

    if name not in params.generators:
        raise KeyError(f"unknown generator {name!r} (params.yaml key 'generators'); known: {', '.join(params.generators)}")
    spec, g = params.generators[name], params.generator
    accelerator = accelerator or Accelerator()
    model_root = _model_root(params, root)
    data = load_filtered(root)
    clip = ClipEncoder.from_pretrained(spec.clip, model_root=model_root)
    dino = DinoEncoder.from_pretrained(spec.dino, model_root=model_root)
    cache = root / "data" / "features"
    c = cached_features(f"clip-{spec.clip}", data["y"], clip.image_embeds, key_parts=(_encoder_key(params, root, spec.clip),), cache_dir=cache)
    d = cached_features(f"dino-{spec.dino}", data["x"], dino.patch_tokens, key_parts=(_encoder_key(params, root, spec.dino),), cache_dir=cache)
    t2i = TextToImage.from_pretrained(params.profile.text_to_image, model_root=model_root, device=accelerator.device)
    gen = CafeGenerator.from_text_to_image(
        t2i, clip_dim=c.shape[-1], dino_dim=d.shape[-1], dino_tokens=d.shape[1], clip_tokens=g.clip_tokens, attention=g.attention
    )
    training = GeneratorTraining(
        steps=g.steps, batch_size=g.batch_size, lr=g.lr, drop_p=g.drop_p, checkpoint_every=g.checkpoint_every, seed=params.seed
    )
    key = config_hash(to_dict(g), asdict(spec), _encoder_key(params, root, spec.clip), _encoder_key(params, root, spec.dino), len(c))
    out = generator_dir(root, name)
    marker = out / "cafe_generator.json"
    if marker.is_file() and json.loads(marker.read_text())["key"] == key:
        logger.info("generator %s is up to date (key %s): nothing to train", name, key)
        return json.loads(marker.read_text())["final"]
    ckpt = out.parent / ".checkpoints" / f"{name}-{key}"
    probe = _sample_probe(data, c, d)

    def log_samples(step: int) -> None:
        if accelerator.is_main_process and (step % g.sample_every == 0 or step == g.steps):
            gen.eval()
            images = gen.generate(probe["c"], probe["d"], num_inference_steps=g.sample_steps, seed=params.seed)
            gen.train()
            fig = image_grid([list(probe["x"]), list(probe["y"]), list(images)], row_titles=["photo x", "target y", f"G step {step}"])
            tracking.log_figure(fig, f"samples/step-{step:06d}.png")

    with tracking.start_run("train_generator", name, {"generator": to_dict(g), "spec": asdict(spec), "pairs": len(c)}, root=root) if accelerator.is_main_process else contextlib.nullcontext():
        stats = train_generator(gen, data["y"], c, d, training, ckpt, accelerator=accelerator, on_checkpoint=log_samples)
        if accelerator.is_main_process:
            tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{name}-"))
            gen.save_pretrained(tmp)
            (tmp / "cafe_generator.json").write_text(json.dumps({"key": key, "spec": asdict(spec), "final": stats}, indent=2))
            publish_dir(tmp, out)
            shutil.rmtree(ckpt, ignore_errors=True)
    accelerator.wait_for_everyone()
    return stats


def _sample_probe(data: dict, c: torch.Tensor, d: torch.Tensor, n: int = 8) -> dict:
    rows = np.linspace(0, len(c) - 1, n).astype(int)
    return {"x": data["x"][rows], "y": data["y"][rows], "c": c[rows], "d": d[rows]}


# --- evaluation: the DreamBench protocol on CAFE-mini's held-out subjects ---------------------------


class ReferenceGenerator:
    """G driven by a reference image: c = E_c(base text-to-image model's image of the prompt), d = E_d(photo).

    This is how the generator is evaluated before the assistant exists: the reference
    carries the instruction's semantics (DESIGN.md, eq. 4's x_ref), the photo the identity.
    With a user-given reference image instead of a prompt it is the paper's fast path.
    """

    def __init__(self, gen, clip, dino, t2i, sampling, guidance: str = "both", cache: Path | None = None):
        self.gen, self.clip, self.dino, self.t2i = gen, clip, dino, t2i
        self.sampling, self.guidance = sampling, guidance
        self.cache = ReferenceCache(cache)

    @classmethod
    def load(cls, params: Params, root: Path, generator: str, guidance: str = "both") -> "ReferenceGenerator":
        from .diffusion import CafeGenerator, TextToImage
        from .encoders import ClipEncoder, DinoEncoder

        spec, model_root = params.generators[generator], _model_root(params, root)
        return cls(
            CafeGenerator.from_pretrained(generator_dir(root, generator)),
            ClipEncoder.from_pretrained(spec.clip, model_root=model_root),
            DinoEncoder.from_pretrained(spec.dino, model_root=model_root),
            TextToImage.from_pretrained(params.profile.text_to_image, model_root=model_root),
            params.generator,
            guidance,
            cache=root / "data" / "references" / f"{_encoder_key(params, root, params.profile.text_to_image)}.safetensors",
        )

    def references(self, prompts: list[str], seed: int) -> np.ndarray:
        """The base model's image of each prompt, seeded per prompt and cached: every variant and
        every subject of a class share them, so they are drawn once per experiment."""
        steps = self.sampling.sample_steps
        keys = [config_hash(p, seed, steps) for p in prompts]
        missing = sorted({(k, p) for k, p in zip(keys, prompts) if k not in self.cache})
        if missing:
            seeds = [int(k[:8], 16) for k, _ in missing]
            images = self.t2i([p for _, p in missing], num_inference_steps=steps, seed=seeds)
            self.cache.update({k: img for (k, _), img in zip(missing, images)})
        return np.stack([self.cache[k] for k in keys])

    def from_images(self, photo, references, seed: int) -> np.ndarray:
        """The fast path: c straight from reference images' CLIP embeddings, d from the photo."""
        g = self.sampling
        c = self.clip.image_embeds(references)
        d = self.dino.patch_tokens(photo)  # one photo (PIL or H x W x 3) for every reference
        d = d.expand(len(c), -1, -1)
        return self.gen.generate(
            c, d, guidance=self.guidance, clip_scale=g.clip_scale, dino_scale=g.dino_scale,
            num_inference_steps=g.sample_steps, scheduler=g.scheduler, seed=seed,
        )

    def __call__(self, photo, prompts: list[str], seed: int) -> np.ndarray:
        return self.from_images(photo, self.references(prompts, seed), seed)


class ReferenceCache(dict):
    """Reference images by key, loaded from and saved (atomically) to one safetensors file."""

    def __init__(self, path: Path | None):
        super().__init__()
        self.path = path
        if path is not None and path.is_file():
            from safetensors.numpy import load_file

            self.update(load_file(path))

    def save(self) -> None:
        if self.path is not None and self:
            atomic_save_safetensors({k: np.ascontiguousarray(v) for k, v in self.items()}, self.path)


def dreambench_protocol(params: Params, root: Path, generator: str, *, subjects: int, prompts: int, images_per_prompt: int, bench=None) -> ProtocolRow:
    """The DreamBench protocol on the real photos (../shared/dreambench): DINO, CLIP-I, CLIP-T.

    Each subject's first photo is the input; CAFE is asked in the paper's phrasing, CLIP-T is
    computed against the original prompt, DINO / CLIP-I against every photo of the subject.
    With the sd2 profile's evaluation encoders these are the paper's numbers; with the world's
    16-pixel models they only show that every step of the protocol runs on real data.
    """
    from .dreambench import load_dreambench
    from .encoders import ClipEncoder, DinoEncoder

    bench = bench or load_dreambench()
    model_root = _model_root(params, root)
    eval_clip = ClipEncoder.from_pretrained(params.profile.eval_clip, model_root=model_root)
    eval_dino = DinoEncoder.from_pretrained(params.profile.eval_dino, model_root=model_root)
    draw = ReferenceGenerator.load(params, root, generator)
    rng = np.random.default_rng(params.seed)
    scores: dict[str, list[float]] = {"DINO": [], "CLIP_I": [], "CLIP_T": []}
    for subject in bench.subjects[:subjects]:
        photos = subject.load_images()
        originals = bench.prompts(subject)[:prompts]
        asked = bench.cafe_prompts(subject, rng)[:prompts]
        logger.info("DreamBench %s: e.g. %r", subject.name, asked[0])
        for k in range(images_per_prompt):
            images = draw(photos[0], originals, seed=params.seed + k)
            scores["DINO"].append(dino_similarity(eval_dino, images, photos))
            scores["CLIP_I"].append(clip_i_similarity(eval_clip, images, photos))
            scores["CLIP_T"].append(clip_t_similarity(eval_clip, images, originals))
    draw.cache.save()
    return ProtocolRow(generator, "dreambench", **{k: float(np.mean(v)) for k, v in scores.items()})




# --- the assistant M (eq. 2): a lambda grid per distance, chosen on validation -----------------

GT_EMBEDDING = "gt_embedding"  # c = E_c(the true target render): what a perfect assistant would predict
TARGET_SEEDS = 1000  # offset of the render seeds of true targets y, away from the ceiling row's scenes


def assistant_dir(root: Path, name: str) -> Path:
    return root / "models" / "assistant" / name


def train_assistant_stage(params: Params, root: Path, name: str, *, accelerator=None) -> dict:
    """Train assistant `name` once per lambda of its grid, validate each, publish the best.

    Fit and validation dialogues come from disjoint training-split subjects (held-out subjects
    are kept for the tables). The score that picks lambda is end to end and the same for both
    distances: evaluation-CLIP similarity between G(c_hat, d) and the true target y.
    """
    from accelerate import Accelerator

    from .assistant import AssistantConfig, CafeAssistant
    from .data import dialogue_set, validation_subjects
    from .diffusion import CafeGenerator
    from .encoders import ClipEncoder, DinoEncoder
    from .pipeline import CafePipeline, Sampling
    from .train import AssistantTraining, train_assistant

    if name not in params.assistants:
        raise KeyError(f"unknown assistant {name!r} (params.yaml key 'assistants'); known: {', '.join(params.assistants)}")
    spec, a = params.assistants[name], params.assistant
    accelerator = accelerator or Accelerator()
    world, model_root = make_world(params), _model_root(params, root)
    fit, val = validation_subjects(world.subjects(split="train"))
    data_cache, feature_cache = root / "data" / "assistant", root / "data" / "features"
    train_set = dialogue_set(world, fit, a.dialogues, seed=params.seed, multi_turn_p=a.multi_turn_p, cache_dir=data_cache)
    val_set = dialogue_set(world, val, a.val_dialogues, seed=params.seed + 1, multi_turn_p=a.multi_turn_p, cache_dir=data_cache)
    gen_spec = params.generators[a.generator]  # c_hat must live in the CLIP space G reads
    clip = ClipEncoder.from_pretrained(gen_spec.clip, model_root=model_root, device=accelerator.device)
    dino = DinoEncoder.from_pretrained(gen_spec.dino, model_root=model_root, device=accelerator.device)
    clip_key = _encoder_key(params, root, gen_spec.clip)
    patches = cached_features(f"clip-patches-{gen_spec.clip}", train_set.x, clip.patch_features, key_parts=(clip_key,), cache_dir=feature_cache)
    targets = cached_features(f"clip-{gen_spec.clip}", train_set.y, clip.image_embeds, key_parts=(clip_key,), cache_dir=feature_cache)
    generator = CafeGenerator.from_pretrained(generator_dir(root, a.generator), device=accelerator.device)
    eval_clip = ClipEncoder.from_pretrained(params.profile.eval_clip, model_root=model_root, device=accelerator.device)
    training = AssistantTraining(a.steps, a.batch_size, a.lr, a.weight_decay, a.checkpoint_every, params.seed)
    lm_dtype = torch.bfloat16 if accelerator.device.type == "cuda" else torch.float32  # the frozen LM in half precision on GPU
    out = assistant_dir(root, name)
    grid = []
    for lam in spec.lambdas:
        member = out / "grid" / f"lambda-{lam:g}"
        key = config_hash(to_dict(a), spec.distance, lam, clip_key, _encoder_key(params, root, params.profile.lm),
                          json.loads((generator_dir(root, a.generator) / "cafe_generator.json").read_text())["key"])
        marker = member / "cafe_assistant.json"
        if marker.is_file() and json.loads(marker.read_text())["key"] == key:
            logger.info("assistant %s lambda=%g is up to date (key %s)", name, lam, key)
            grid.append(json.loads(marker.read_text()))
            continue
        config = AssistantConfig(patches.shape[-1], targets.shape[-1], lambda_=lam, distance=spec.distance)
        torch.manual_seed(params.seed)
        assistant = CafeAssistant.from_pretrained(params.profile.lm, config=config, model_root=model_root, device=accelerator.device, dtype=lm_dtype)
        prompts = [assistant.encode_prompt(m) for m in train_set.messages]
        responses = [assistant.encode_response(r) for r in train_set.responses]
        ckpt = out.parent / ".checkpoints" / f"{name}-lambda-{lam:g}-{key}"
        run_name = f"{name}-lambda-{lam:g}"
        with tracking.start_run("train_assistant", run_name, {"assistant": to_dict(a), "distance": spec.distance, "lambda": lam}, root=root) if accelerator.is_main_process else contextlib.nullcontext():
            stats = train_assistant(assistant, prompts, responses, patches, targets, training, ckpt, accelerator=accelerator)
            if accelerator.is_main_process:
                pipe = CafePipeline(assistant, clip, dino, generator, Sampling.from_params(params.generator), a.max_new_tokens)
                validation, figure = validate_assistant(pipe, world, val_set, eval_clip, seed=params.seed)
                tracking.log_metrics({f"val/{k}": v for k, v in validation.items()})
                tracking.log_figure(figure, "validation_samples.png")
                record = {"key": key, "lambda": lam, "distance": spec.distance, "final": stats, "validation": validation}
                member.parent.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(dir=member.parent, prefix=".lambda-"))
                assistant.save_trainable(tmp)
                (tmp / "cafe_assistant.json").write_text(json.dumps(record, indent=2))
                publish_dir(tmp, member)
                shutil.rmtree(ckpt, ignore_errors=True)
                grid.append(record)
        accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return {}
    best = max(grid, key=lambda r: r["validation"]["score"])
    chosen = out / "grid" / f"lambda-{best['lambda']:g}"
    for file in ("assistant.safetensors", "assistant_config.json"):
        shutil.copyfile(chosen / file, out / f".{file}.tmp")
        (out / f".{file}.tmp").replace(out / file)
    selection = {"assistant": name, "distance": spec.distance, "chosen_lambda": best["lambda"],
                 "criterion": "validation score: eval-CLIP cosine of G(c_hat, d) to the true target y",
                 "grid": [{"lambda": r["lambda"], **r["validation"], **{f"train_{k}": v for k, v in r["final"].items()}} for r in grid]}
    atomic_write_json(out / "selection.json", selection)
    atomic_write_json(root / "results" / "assistant" / f"{name}.json", selection)
    logger.info("assistant %s: lambda %g chosen on validation (score %.4f)", name, best["lambda"], best["validation"]["score"])
    return selection


def validate_assistant(pipe, world, dialogues, eval_clip, *, seed: int, batch_size: int = 64) -> tuple[dict, object]:
    """Validation figures of one trained assistant, and a grid of its drawings.

    score: eval-CLIP cosine between G(c_hat, d) and the true target y (what picks lambda);
    cosine: between c_hat and E_c(y); context_accuracy: the response commits to a context that
    fulfils the request (any of a vague wish's).
    """
    import torch.nn.functional as F

    texts, c_hats, images = [], [], []
    for i in range(0, len(dialogues), batch_size):
        t, c, img, _ = pipe.respond(list(dialogues.x[i : i + batch_size]), dialogues.messages[i : i + batch_size], seed=seed + i)
        texts += t
        c_hats.append(c)
        images.append(img)
    c_hat, images = torch.cat(c_hats), np.concatenate(images)
    true = pipe.clip.image_embeds(dialogues.y).float().cpu()
    drawn = F.cosine_similarity(eval_clip.image_embeds(images, normalize=True), eval_clip.image_embeds(dialogues.y, normalize=True))
    hits = []
    for text, sid, valid in zip(texts, dialogues.subject_ids, dialogues.valid):
        found = world.find_context(world.subject(int(sid)).domain, text)
        hits.append(found is not None and found.name in valid)
    result = {
        "score": float(drawn.mean()),
        "cosine": float(F.cosine_similarity(c_hat, true).mean()),
        "norm_ratio": float((c_hat.norm(dim=-1) / true.norm(dim=-1)).mean()),
        "context_accuracy": float(np.mean(hits)),
    }
    rows = min(8, len(dialogues))
    figure = image_grid([list(dialogues.x[:rows]), list(dialogues.y[:rows]), list(images[:rows])], row_titles=["photo x", "target y", "G(c_hat, d)"])
    return result, figure


def evaluate_variant(params: Params, root: Path, variant: str) -> dict:
    """DINO / CLIP-I / CLIP-T on held-out objects, ID / CLIP-T on held-out faces, for one variant.

    Where c comes from depends on the variant: a reference image the base text-to-image model
    draws from the plain prompt (`variants`, DESIGN.md eq. 4's x_ref), the assistant's c_hat for
    the CAFE-phrased request (`assistants`; their quality figures go to quality.json), or the
    CLIP embedding of the true target render (`gt_embedding`). `real_images` scores
    ground-truth renders: the ceiling. d is always E_d of the subject photo x.
    """
    from .encoders import ClipEncoder, DinoEncoder, FaceEmbedder

    known = [*params.variants, *params.assistants, GT_EMBEDDING, REAL_IMAGES]
    if variant not in known:
        raise KeyError(f"unknown variant {variant!r} (params.yaml keys 'variants', 'assistants'); known: {', '.join(known)}")
    e = params.evaluation
    world = make_world(params)
    model_root = _model_root(params, root)
    eval_clip = ClipEncoder.from_pretrained(params.profile.eval_clip, model_root=model_root)
    eval_dino = DinoEncoder.from_pretrained(params.profile.eval_dino, model_root=model_root)
    face = FaceEmbedder.from_pretrained(params.profile.face_id, model_root=model_root)
    drawer = _Drawer.for_variant(params, root, variant, world)
    rows, grids = [], {}
    for domain, n_subjects in (("object", e.object_subjects), ("face", e.face_subjects)):
        cases = mini_eval_cases(world, domain, n_subjects, e.prompts, params.seed, n_references=e.references)
        scores: dict[str, list[float]] = {"DINO": [], "CLIP_I": [], "CLIP_T": [], "ID": []}
        shown = []
        for case in cases:
            prompts = [p.prompt for p in case.prompts]
            for k in range(e.images_per_prompt):
                images = drawer(case, k)
                refs = case.reference_images
                scores["CLIP_T"].append(clip_t_similarity(eval_clip, images, prompts))
                if domain == "object":
                    scores["DINO"].append(dino_similarity(eval_dino, images, refs))
                    scores["CLIP_I"].append(clip_i_similarity(eval_clip, images, refs))
                else:
                    scores["ID"].append(identity_similarity(face, images, refs))
                if k == 0 and len(shown) < 6:
                    shown.append([case.input_image, *images[:8]])
        rows.append(ProtocolRow(variant, domain, **{k: float(np.mean(v)) if v else None for k, v in scores.items()}))
        grids[domain] = (shown, ["photo x"] + [p.context.phrase.format("subject") for p in cases[0].prompts][:8])
    out = root / "results" / "variants" / variant
    out.mkdir(parents=True, exist_ok=True)
    result = {"variant": variant, "rows": [r.to_dict() for r in rows]}
    quality = drawer.finish(eval_clip, eval_dino, face)
    if quality is not None:
        atomic_write_json(out / "quality.json", quality)
    for domain, (shown, titles) in grids.items():
        image_grid(shown, col_titles=titles).savefig(out / f"samples_{domain}.png", dpi=150)
    atomic_write_json(out / "metrics.json", result)  # last: its presence means the variant is complete
    return result


class _Drawer:
    """Draws a case's prompts for one variant; `finish` returns its extra figures (or None)."""

    def __init__(self, params: Params, world):
        self.params, self.world = params, world

    @staticmethod
    def for_variant(params: Params, root: Path, variant: str, world) -> "_Drawer":
        if variant == REAL_IMAGES:
            return _Drawer(params, world)
        if variant == GT_EMBEDDING:
            return _TrueEmbeddingDrawer(params, root, world)
        if variant in params.assistants:
            return _AssistantDrawer(params, root, world, variant)
        spec = params.variants[variant]
        return _ReferenceDrawer(params, world, ReferenceGenerator.load(params, root, spec.generator, spec.guidance))

    def __call__(self, case, k: int) -> np.ndarray:
        """Ground-truth renders of the case's prompts (the ceiling row)."""
        seeds = [self.params.seed + 7919 * k + i for i in range(len(case.prompts))]
        return self.world.render_batch([case.subject] * len(case.prompts), [p.context for p in case.prompts], seeds)

    def finish(self, eval_clip, eval_dino, face) -> dict | None:
        return None


class _ReferenceDrawer(_Drawer):
    def __init__(self, params: Params, world, draw: ReferenceGenerator):
        super().__init__(params, world)
        self.draw = draw

    def __call__(self, case, k: int) -> np.ndarray:
        return self.draw(case.input_image, [p.prompt for p in case.prompts], seed=self.params.seed + k)

    def finish(self, eval_clip, eval_dino, face) -> None:
        self.draw.cache.save()


class _TrueEmbeddingDrawer(_Drawer):
    """The fast path with the true target render as the reference: c = E_c(y), an oracle assistant."""

    def __init__(self, params: Params, root: Path, world):
        from .pipeline import CafePipeline

        super().__init__(params, world)
        self.pipe = CafePipeline.from_params(params, root, assistant=None, device="cpu")

    def __call__(self, case, k: int) -> np.ndarray:
        targets = super().__call__(case, k + TARGET_SEEDS)  # other scenes than the ceiling row's
        return self.pipe.generate(case.input_image, targets, seed=self.params.seed + 1000 * k)[0]


class _AssistantDrawer(_Drawer):
    """Chat: the CAFE-phrased request -> response and c_hat -> G; collects the quality figures."""

    def __init__(self, params: Params, root: Path, world, name: str):
        from .pipeline import CafePipeline

        super().__init__(params, world)
        self.pipe = CafePipeline.from_params(params, root, assistant=name, device="cpu")
        self.cases, self.turns = [], []

    def __call__(self, case, k: int) -> np.ndarray:
        chats = [[{"role": "user", "content": p.cafe_prompt}] for p in case.prompts]
        texts, c_hat, images, _ = self.pipe.respond([case.input_image] * len(chats), chats, seed=self.params.seed + 1000 * k)
        targets = super().__call__(case, k + TARGET_SEEDS)
        self.turns.append((case, texts, c_hat, images, targets))
        if k == 0:
            self.cases.append(case)
        return images

    def finish(self, eval_clip, eval_dino, face) -> dict:
        return assistant_quality(self.pipe, self.world, self.turns, self.cases, eval_clip, eval_dino, face, seed=self.params.seed)


def assistant_quality(pipe, world, turns, cases, eval_clip, eval_dino, face, *, seed: int) -> dict:
    """Deliverable 6's figures on held-out subjects, per domain.

    - cosine: c_hat against E_c(y), y a true render of the requested context;
    - names_class_and_context: the response names the subject's class and the requested context;
    - image_matches_response: eval-CLIP's top context for the drawn image (among the domain's
      contexts, prompts naming the class) is the one the response names; `_ceiling` is the same
      test on true renders, what a perfect drawing scores;
    - ambiguous_valid_with_reason: a vague wish answered with a context that fulfils it and a "because";
      ambiguous_names_class: that answer names the subject's class, which most wishes leave to the photo;
    - second_turn_*: a request asked as the second turn of a chat: is its context named, and are
      c_hat's cosine to the true target and the drawings' identity (DINO for objects, ID for
      faces, 4 images) as good as when the same request is asked alone (`same_request_alone_*`)?
    """
    import torch.nn.functional as F

    from .world import words

    out: dict[str, dict] = {}
    rng = np.random.default_rng([seed, 41])
    for domain in ("object", "face"):
        mine = [t for t in turns if t[0].subject.domain == domain]
        if not mine:
            continue
        contexts = world.contexts(domain)
        cos, named, matches, ceiling = [], [], [], []
        for case, texts, c_hat, images, targets in mine:
            cos += F.cosine_similarity(c_hat, pipe.clip.image_embeds(targets).float().cpu()).tolist()
            top = _top_contexts(world, eval_clip, case.subject, contexts, images)
            top_true = _top_contexts(world, eval_clip, case.subject, contexts, targets)
            for text, prompt, t, tt in zip(texts, case.prompts, top, top_true):
                found = world.find_context(domain, text)
                named.append(case.subject.cls in words(text) and found is not None and found.id == prompt.context.id)
                matches.append(found is not None and t == found.id)
                ceiling.append(tt == prompt.context.id)
        ambiguous, ambiguous_class, second_named = [], [], []
        later, alone = {"identity": [], "cosine": []}, {"identity": [], "cosine": []}
        for case in [c for c in cases if c.subject.domain == domain]:
            asks = [world.turn(case.subject, "ambiguous", rng) for _ in range(4)]
            texts, _, _, _ = pipe.respond([case.input_image] * len(asks), [[{"role": "user", "content": t.user}] for t in asks], seed=seed)
            for text, ask in zip(texts, asks):
                found = world.find_context(domain, text)
                ambiguous.append(found is not None and found.name in ask.valid and "because" in words(text))
                ambiguous_class.append(case.subject.cls in words(text))  # "Make it festive!" names no class: the photo must
            # The last prompt's request as the second turn of a chat, and the same request alone.
            first, second = case.prompts[0], case.prompts[-1]
            r1 = pipe.chat(case.input_image, first.cafe_prompt, seed=seed)
            r2 = pipe.chat(case.input_image, second.cafe_prompt, r1.history, seed=seed, num_images=4)
            r0 = pipe.chat(case.input_image, second.cafe_prompt, seed=seed, num_images=4)
            found = world.find_context(domain, r2.response)
            second_named.append(found is not None and found.id == second.context.id)
            target = pipe.clip.image_embeds(world.render(case.subject, second.context, seed=seed + TARGET_SEEDS).image[None]).float().cpu()[0]
            for result, scores in ((r2, later), (r0, alone)):
                scores["cosine"].append(float(F.cosine_similarity(result.embedding, target, dim=0)))
                if domain == "face":
                    scores["identity"].append(identity_similarity(face, result.images, case.reference_images))
                else:
                    scores["identity"].append(dino_similarity(eval_dino, result.images, case.reference_images))
        out[domain] = {
            "turns": len(named),
            "cosine": float(np.mean(cos)),
            "names_class_and_context": float(np.mean(named)),
            "image_matches_response": float(np.mean(matches)),
            "image_matches_response_ceiling": float(np.mean(ceiling)),
            "ambiguous_requests": len(ambiguous),
            "ambiguous_valid_with_reason": float(np.mean(ambiguous)),
            "ambiguous_names_class": float(np.mean(ambiguous_class)),
            "second_turn_names_context": float(np.mean(second_named)),
            "second_turn_cosine": float(np.mean(later["cosine"])),
            "same_request_alone_cosine": float(np.mean(alone["cosine"])),
            "second_turn_identity": float(np.mean(later["identity"])),
            "same_request_alone_identity": float(np.mean(alone["identity"])),
            "identity_metric": "ID" if domain == "face" else "DINO",
        }
    return out


def _top_contexts(world, eval_clip, subject, contexts, images) -> list[int]:
    """For each image, the id of the context whose prompt eval-CLIP finds closest."""
    text = eval_clip.text_embeds([world.prompt(subject, c) for c in contexts], normalize=True)
    sims = eval_clip.image_embeds(images, normalize=True) @ text.T
    return [contexts[int(i)].id for i in sims.argmax(-1)]


# --- ablation tables ---------------------------------------------------------------------------


def ablation_table(params: Params, root: Path, target: str) -> list[ProtocolRow]:
    """Collect the variants of `target` into results/<target>/table.{md,csv} and one MLflow run each."""
    if target not in params.ablations:
        raise KeyError(f"unknown ablation {target!r} (params.yaml key 'ablations'); known: {', '.join(params.ablations)}")
    rows = []
    for variant in params.ablations[target]:
        path = root / "results" / "variants" / variant / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run `dvc repro evaluate@{variant}` first")
        result = json.loads(path.read_text())
        variant_rows = [ProtocolRow(r["variant"], r["domain"], r["DINO"], r["CLIP-I"], r["CLIP-T"], r["ID"]) for r in result["rows"]]
        rows.extend(variant_rows)
        _log_variant_run(root, target, variant, params, variant_rows, path.parent)
    write_table(rows, root / "results" / target)
    return rows


def _log_variant_run(root: Path, target: str, variant: str, params: Params, rows: list[ProtocolRow], folder: Path) -> None:
    """One MLflow run per variant; a rerun with identical results adds no duplicate."""
    import mlflow

    content = config_hash([r.to_dict() for r in rows])
    mlflow.set_tracking_uri(tracking.tracking_uri(root))
    existing = mlflow.search_runs(
        experiment_names=[target], filter_string=f"tags.variant = '{variant}' and tags.content = '{content}'", output_format="list"
    ) if mlflow.get_experiment_by_name(target) else []
    if existing:
        return
    run_params = {"variant": variant}
    if variant in params.variants:
        spec = params.variants[variant]
        gen_spec = params.generators[spec.generator]
        run_params.update(generator=spec.generator, guidance=spec.guidance, clip=gen_spec.clip, dino=gen_spec.dino)
    if variant in params.assistants:
        selection = root / "results" / "assistant" / f"{variant}.json"
        chosen = json.loads(selection.read_text())["chosen_lambda"] if selection.is_file() else None
        run_params.update(distance=params.assistants[variant].distance, chosen_lambda=chosen, generator=params.assistant.generator)
    with tracking.start_run(target, variant, run_params, root=root, tags={"variant": variant, "content": content}):
        for row in rows:
            tracking.log_metrics({f"{row.domain}/{k}": v for k, v in row.to_dict().items() if isinstance(v, float)})
        quality = folder / "quality.json"
        if quality.is_file():
            for domain, figures in json.loads(quality.read_text()).items():
                tracking.log_metrics({f"{domain}/quality/{k}": v for k, v in figures.items() if isinstance(v, (int, float))})
        for png in sorted(folder.glob("samples_*.png")):
            mlflow.log_artifact(str(png))


def main(argv: list[str] | None = None) -> None:
    """`python -m cafe_core.stages STAGE [NAME]`: a stage without its notebook (e.g. under accelerate launch)."""
    import argparse

    from .config import load_params, project_root

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("stage", choices=["teacher_data", "train_generator", "train_assistant", "evaluate", "ablation"])
    parser.add_argument("name", nargs="?", help="generator, assistant, variant or ablation target")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    root = project_root()
    params = load_params(root / args.params)
    if args.stage != "teacher_data" and not args.name:
        parser.error(f"{args.stage} needs a name")
    run = {
        "teacher_data": lambda: teacher_data(params, root),
        "train_generator": lambda: train_generator_stage(params, root, args.name),
        "train_assistant": lambda: train_assistant_stage(params, root, args.name),
        "evaluate": lambda: evaluate_variant(params, root, args.name),
        "ablation": lambda: ablation_table(params, root, args.name),
    }[args.stage]
    run()


if __name__ == "__main__":
    main()
