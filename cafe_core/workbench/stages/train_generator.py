"""Stages ``train_generator@<name>`` and ``finetune_generator@<name>``: G (eq. 1, eq. 3) trained
from the base text-to-image model, or fine-tuned from a trained G (paper 3.3), on a dataset."""

from __future__ import annotations

import contextlib
import functools
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ...data.features import cached_features
from ...models.encoders import ClipEncoder, DinoEncoder
from ...models.generator import CafeGenerator, target_parameters
from ...models.text_to_image import TextToImage
from ...utils.digest import config_hash
from ...utils.hub import resolve_model
from .. import tracking
from ..artifacts import build_once, read_marker
from ..code_deps import code_digest
from ..config import Params
from ..paths import ProjectPaths
from ..plots import image_grid
from ..processes import side_by_side
from ..training import GeneratorTraining, train_generator
from .common import GENERATOR_MARKER, encoder_key, generator_digest
from .teacher_data import training_dataset, training_pairs

DATASET_MODULE = "cafe_core.workbench.stages.teacher_data"
"""Where G's rows come from: left out of G's code digest, since its key hashes those rows by content
(the dataset reader, which decodes them, stays in: it is how G reads them)."""

__all__ = ["GENERATOR_MARKER", "train_generator_stage"]


def train_generator_stage(params: Params, root: Path, name: str, *, accelerator=None) -> dict[int, dict]:
    """Train generator ``name`` (its encoders and dataset from ``params.generators``) on the rows its
    dataset keeps, once per training seed (``params.seeds``), each to ``models/generator/<name>/seed-<seed>``.
    A G with ``init`` (``params.finetuned``) starts from that G's weights of the same training seed
    and trains its own ``steps``; the others start from the base model.

    Returns each seed's final training losses. A seed already trained with this key is skipped, so
    a killed stage resumes at the seeds it was training (from their checkpoints). The seeds left
    train ``params.compute.seed_processes`` at a time, each in a process of its own
    (:func:`~cafe_core.workbench.processes.side_by_side`). Runs under ``accelerate launch`` on
    several processes too: each trains on its shard of every batch, one seed at a time, and the
    main one logs and publishes.
    """
    from accelerate import Accelerator

    if name not in params.generators:
        raise KeyError(
            f"unknown generator {name!r} (params.yaml key 'generators'); known: {', '.join(params.generators)}"
        )
    paths, spec, g = ProjectPaths(root), params.generators[name], params.generator
    accelerator = accelerator or Accelerator()
    main = accelerator.is_main_process
    run_params = {"generator": g.training(), "spec": asdict(spec), "seeds": params.seeds}
    stage_run = tracking.start_run(params.generator_stage(name), params, log_params=run_params, root=root)
    with stage_run if main else contextlib.nullcontext():
        pending, prepared = [], {}
        for seed in params.seeds:
            prepared[seed] = inputs = _seed_inputs(params, root, name, seed, accelerator)
            if main:
                tracking.log_metrics({f"pairs_seed_{seed}": len(inputs.features[1])})
                tracking.set_tags({f"cafe.dataset.seed_{seed}": str(inputs.folder.relative_to(root))})
            if (read_marker(paths.generator(name, seed), GENERATOR_MARKER) or {}).get("key") != inputs.key:
                pending.append(seed)
        if accelerator.num_processes > 1:  # the processes share each batch: one seed at a time
            records = [_train_seed(params, root, name, seed, accelerator, prepared[seed]) for seed in params.seeds]
        else:  # trained seeds are found, in this process; the others side by side
            records = [
                _train_seed(params, root, name, seed, inputs=prepared[seed])
                for seed in params.seeds
                if seed not in pending
            ]
            jobs = [(params, root, name, seed) for seed in pending]
            records += side_by_side(_train_seed, jobs, processes=params.compute.seed_processes)
    return {record["seed"]: record["final"] for record in sorted(records, key=lambda r: r["seed"])}


@dataclass
class _SeedInputs:
    folder: Path  # the training dataset's folder
    pairs: dict  # its rows (:func:`training_pairs`)
    features: tuple  # (targets, c, d) of those rows, from the feature caches
    key: str  # G's skip key for this seed
    checkpoint: Path


def _seed_inputs(params: Params, root: Path, name: str, seed: int, accelerator) -> _SeedInputs:
    """Training seed ``seed``'s rows, their cached features (filled by the main process when
    missing: the frozen encoders are loaded only then) and G's key."""
    paths, spec, g = ProjectPaths(root), params.generators[name], params.generator
    model_root = paths.model_root(params.profile)
    clip_name, dino_name = params.profile.encoder(spec.clip), params.profile.encoder(spec.dino)
    device = accelerator.device  # the frozen encoders fill the caches where the training runs
    clip = functools.cache(lambda: ClipEncoder.from_pretrained(clip_name, model_root=model_root, device=device))
    dino = functools.cache(lambda: DinoEncoder.from_pretrained(dino_name, model_root=model_root, device=device))
    vae = functools.cache(lambda: _base_vae(params.profile.text_to_image, model_root, device))
    clip_key, dino_key = encoder_key(params, paths, clip_name), encoder_key(params, paths, dino_name)
    t2i_key = encoder_key(params, paths, params.profile.text_to_image)

    def encode_targets(images: np.ndarray) -> torch.Tensor:
        """uint8 targets (b, H, W, 3) -> what G draws its training targets from (its VAE's or pixels)."""
        return target_parameters(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0, vae(), device=device)

    folder = training_dataset(root, spec.data, seed)
    pairs = training_pairs(folder)
    caches = {  # name: (images, encoder, its identity)
        "targets": (pairs["y"], encode_targets, t2i_key),
        f"clip-{spec.clip}": (pairs["y"], lambda images: clip().image_embeds(images), clip_key),
        f"dino-{spec.dino}": (pairs["x"], lambda images: dino().patch_tokens(images), dino_key),
    }
    with accelerator.main_process_first():  # the main process fills a missing cache, the others read it
        features = tuple(
            cached_features(
                cache,
                images,
                encode,
                key_parts=(identity,),
                cache_dir=paths.features,
                dtype=params.features.torch_dtype,
            )
            for cache, (images, encode, identity) in caches.items()
        )
    start = _start_digest(paths, name, spec.init, seed)
    rows = [pairs[k].digest() for k in ("x", "y")]  # the rows G reads, by content
    code = generator_code()
    key = config_hash(g.training(), seed, asdict(spec), start, clip_key, dino_key, params.features.dtype, rows, code)
    return _SeedInputs(folder, pairs, features, key, paths.checkpoints("generator") / f"{name}-seed-{seed}-{key}")


def _train_seed(
    params: Params, root: Path, name: str, seed: int, accelerator=None, inputs: _SeedInputs | None = None
) -> dict:
    """Train (or find trained) training seed ``seed`` of G ``name``; its marker's record.

    Picklable by name, so :func:`side_by_side` can run it in a process of its own."""
    from accelerate import Accelerator

    accelerator = accelerator or Accelerator()
    inputs = inputs or _seed_inputs(params, root, name, seed, accelerator)  # a worker reads them again
    record = build_once(
        ProjectPaths(root).generator(name, seed),
        key=inputs.key,
        marker=GENERATOR_MARKER,
        build=_builder(params, root, name, seed, inputs.pairs, inputs.features, inputs.checkpoint, accelerator),
        checkpoint=inputs.checkpoint,
        main_process=accelerator.is_main_process,
    )
    accelerator.wait_for_everyone()
    return record


def generator_code() -> str:
    """The code in G's skip key: this stage's and what it imports, and the dataset reader that decodes
    G's rows, but not :data:`DATASET_MODULE` (the rows themselves are in the key)."""
    return code_digest(__name__, "cafe_core.data.dataset", prune=(DATASET_MODULE,))


def _builder(params: Params, root: Path, name: str, seed: int, pairs: dict, features: tuple, ckpt: Path, accelerator):
    """What ``build_once`` runs to train training seed ``seed`` of G ``name`` into a folder:
    ``pairs`` its training rows (:func:`training_pairs`), ``features`` their (targets, c, d)."""
    paths, spec, g = ProjectPaths(root), params.generators[name], params.generator
    model_root = paths.model_root(params.profile)
    targets, c, d = features
    steps = spec.steps or g.steps  # a fine-tuned G's own; the others train `generator.steps`

    def build(folder: Path | None) -> dict:
        if spec.init is not None:  # the trained G's UNet, CAFE processors and conditioner, all trained on
            gen = CafeGenerator.from_pretrained(paths.generator(spec.init, seed), device=accelerator.device)
            gen.trainable_module().requires_grad_(True)
        else:
            t2i = TextToImage.from_pretrained(
                params.profile.text_to_image, model_root=model_root, device=accelerator.device
            )
            torch.manual_seed(seed)  # G's new layers start from the training seed, not torch's random one
            gen = CafeGenerator.from_text_to_image(
                t2i,
                clip_dim=c.shape[-1],
                dino_dim=d.shape[-1],
                dino_tokens=d.shape[1],
                clip_tokens=g.clip_tokens,
                attention=g.attention,
            )
        training = GeneratorTraining(
            steps=steps,
            batch_size=g.batch_size,
            lr=g.lr,
            drop_p=g.drop_p,
            checkpoint_every=g.checkpoint_every,
            seed=seed,
            snr_gamma=g.snr_gamma,
            ema_decay=g.ema_decay,
            compute=params.compute.generator,
        )
        probe = _sample_probe(pairs, c, d)

        def log_samples(step: int) -> None:
            if accelerator.is_main_process and (step % g.sample_every == 0 or step == steps):
                gen.eval()
                images = gen.generate(probe["c"], probe["d"], num_inference_steps=g.sample_steps, seed=seed)
                gen.train()
                rows = [list(probe["x"]), list(probe["y"]), list(images)]
                fig = image_grid(rows, row_titles=["photo x", "target y", f"G step {step}"])
                tracking.log_image(fig, "samples", step=step)

        main = accelerator.is_main_process
        run = tracking.start_run(f"seed-{seed}", params, log_params={"training_seed": seed}, root=root)
        with run if main else contextlib.nullcontext():
            stats = train_generator(
                gen, targets, c, d, training, ckpt, accelerator=accelerator, on_checkpoint=log_samples
            )
            if folder is not None:
                gen.save_pretrained(folder)
                tracking.log_artifacts(folder, "generator")  # CafeGenerator.from_pretrained(downloaded folder)
        return {"spec": asdict(spec), "seed": seed, "final": stats}

    return build


def _start_digest(paths: ProjectPaths, name: str, init: str | None, seed: int) -> str | None:
    """The weights of the G that ``name`` fine-tunes (training seed ``seed``), so a start retrained to
    other weights retrains it; None for a G that starts from the base model (whose key is in its
    encoders' keys)."""
    if init is None:
        return None
    try:
        return generator_digest(paths.generator(init, seed))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"G {name!r} fine-tunes G {init!r} of training seed {seed}, which is not trained yet: "
            f"run `dvc repro train_generator@{init}`"
        ) from None


def _base_vae(text_to_image: str, model_root: Path, device):
    """The base model's VAE alone (None for a pixel-space model): its UNet and text encoder are not
    needed to encode G's targets, and at SD2's size the text encoder alone is 1.4 GB."""
    from diffusers import AutoencoderKL

    path = resolve_model(text_to_image, model_root=model_root)
    if not (path / "vae").is_dir():
        return None
    vae = AutoencoderKL.from_pretrained(path, subfolder="vae", use_safetensors=True)
    return vae.to(device).eval().requires_grad_(False)


def _sample_probe(pairs: dict, c: torch.Tensor, d: torch.Tensor, n: int = 8) -> dict:
    """``n`` training rows spread over the dataset, drawn during training to show its progress."""
    rows = np.linspace(0, len(c) - 1, n).astype(int)
    return {"x": pairs["x"].subset(rows).decode(), "y": pairs["y"].subset(rows).decode(), "c": c[rows], "d": d[rows]}
