"""Stage ``train_assistant@<name>``: M (eq. 2) once per lambda of its grid; the best on validation is published."""

from __future__ import annotations

import contextlib
import logging
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ...data.dataset import ImageRows
from ...data.features import cached_features
from ...models.assistant import AssistantConfig, CafeAssistant
from ...models.encoders import ClipEncoder, DinoEncoder
from ...models.generator import CafeGenerator
from ...pipeline import CafePipeline
from ...utils.digest import config_hash, photo_digest
from ...utils.files import atomic_write_json
from .. import tracking
from ..artifacts import build_once, read_marker
from ..code_deps import code_digest
from ..config import Params, to_dict
from ..paths import ProjectPaths
from ..plots import image_grid
from ..processes import side_by_side
from ..sources import training_source
from ..training import AssistantTraining, train_assistant
from .common import encoder_key, generator_digest
from .drawing import sampling

__all__ = ["ASSISTANT_MARKER", "train_assistant_stage", "validate_assistant"]

logger = logging.getLogger(__name__)

ASSISTANT_MARKER = "cafe_assistant.json"


def train_assistant_stage(params: Params, root: Path, name: str, *, accelerator=None) -> dict:
    """Train assistant ``name`` for every training seed (``params.seeds``); publish one M per seed.

    The first seed trains the whole lambda grid, validates each member and publishes the best;
    later seeds train the lambda it chose (validation cannot tell the grid's members apart in
    mini, and a seed's lambda is not what the interval is about). The seeds that train one lambda
    (every seed, for a grid of one) train ``compute.seed_processes`` at a time, a process each.
    Seed s is validated with G's seed s, so (G_s, M_s) is one trained system. Fit and validation
    dialogues come from disjoint training-split subjects (held-out subjects are kept for the
    tables). The score that picks lambda is end to end and the same for both distances:
    evaluation-CLIP similarity between G(c_hat, d) and the true target y.
    """
    from accelerate import Accelerator

    if name not in params.assistants:
        raise KeyError(
            f"unknown assistant {name!r} (params.yaml key 'assistants'); known: {', '.join(params.assistants)}"
        )
    paths = ProjectPaths(root)
    spec, a = params.assistants[name], params.assistant
    accelerator = accelerator or Accelerator()
    trainer = _Trainer(params, root, name, accelerator)
    main_process = accelerator.is_main_process
    stage_run = tracking.start_run(f"train_assistant@{name}", params, log_params={"assistant": to_dict(a)}, root=root)
    seeds = {}
    with stage_run if main_process else contextlib.nullcontext():
        first, rest = params.seeds[0], params.seeds[1:]
        if len(spec.lambdas) > 1:  # the first seed searches the grid; the others train its choice
            seeds[first] = trainer.train_seed(first, spec.lambdas)
        else:  # a grid of one: every seed trains it, side by side
            rest = params.seeds
        lambdas = [seeds[first]["chosen_lambda"]] if seeds else spec.lambdas
        processes = params.compute.seed_processes if accelerator.num_processes == 1 else 1
        pending = [seed for seed in rest if not trainer.is_trained(seed, lambdas[0])] if processes > 1 else []
        for seed in rest:
            if seed not in pending:  # found trained, or trained in turn
                seeds[seed] = trainer.train_seed(seed, lambdas)
        if pending:
            jobs = [(params, root, name, seed, lambdas) for seed in pending]
            seeds.update(zip(pending, side_by_side(_train_seed, jobs, processes=processes), strict=True))
        seeds = {seed: seeds[seed] for seed in params.seeds}
        if main_process:
            first = seeds[params.seeds[0]]
            tracking.log_metrics({"chosen_lambda": first["chosen_lambda"]})
    if not main_process:
        return {}
    selection = {
        "assistant": name,
        "distance": spec.distance,
        "generator": spec.generator,
        "chosen_lambda": seeds[params.seeds[0]]["chosen_lambda"],
        "criterion": "validation score: eval-CLIP cosine of G(c_hat, d) to the true target y",
        "seeds": {str(seed): entry for seed, entry in seeds.items()},
    }
    atomic_write_json(paths.assistant_selection(name), selection)
    return selection


def _train_seed(params: Params, root: Path, name: str, seed: int, lambdas: list[float]) -> dict:
    """:meth:`_Trainer.train_seed` in a process of its own (picklable by name): the stage's process
    filled the feature caches, so this one reads them."""
    from accelerate import Accelerator

    return _Trainer(params, root, name, Accelerator()).train_seed(seed, lambdas)


class _Trainer:
    """What every training seed of one assistant shares: dialogues, frozen encoders, features, settings."""

    def __init__(self, params: Params, root: Path, name: str, accelerator) -> None:
        self.params, self.root, self.name, self.accelerator = params, root, name, accelerator
        self.paths = paths = ProjectPaths(root)
        self.spec, a = params.assistants[name], params.assistant
        device = accelerator.device
        self.source, self.model_root = training_source(params, root), paths.model_root(params.profile)
        common = {"multi_turn_p": a.multi_turn_p, "cache_dir": paths.dialogues}
        self.train_set = source_set = self.source.dialogues(a.dialogues, part="fit", seed=params.seed, **common)
        self.val_set = self.source.dialogues(a.val_dialogues, part="val", seed=params.seed + 1, **common)
        gen_spec = params.generators[self.spec.generator]  # c_hat must live in the CLIP space G reads
        clip_name, dino_name = params.profile.encoder(gen_spec.clip), params.profile.encoder(gen_spec.dino)
        self.clip = ClipEncoder.from_pretrained(clip_name, model_root=self.model_root, device=device)
        self.dino = DinoEncoder.from_pretrained(dino_name, model_root=self.model_root, device=device)
        self.clip_key = encoder_key(params, paths, clip_name)

        def features(kind: str, images: np.ndarray | ImageRows, encode) -> torch.Tensor:
            """The frozen CLIP's features of ``images``, computed once (cached beside G's)."""
            name = f"{kind}-{gen_spec.clip}"
            return cached_features(
                name,
                images,
                encode,
                key_parts=(self.clip_key,),
                cache_dir=paths.features,
                dtype=params.features.torch_dtype,
            )

        self.patches = features("clip-patches", source_set.x, self.clip.patch_features)  # what V reads
        self.targets = features("clip", source_set.y, self.clip.image_embeds)  # E_c(y), eq. 2's target
        self.eval_clip = ClipEncoder.from_pretrained(
            params.profile.eval_clip, model_root=self.model_root, device=device
        )
        # the frozen LM in half precision on GPU
        self.lm_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        self.sampling = sampling(params, root)  # validation draws: the scales chosen on validation subjects
        self.lm_key, self.code = encoder_key(params, paths, params.profile.lm), code_digest(__name__)
        digests = [_dialogue_digest(d) for d in (self.train_set, self.val_set)]
        self.data_key = config_hash(*digests, params.features.dtype)  # what M reads: the data, as stored
        self._generator_keys: dict[int, str] = {}

    def key(self, seed: int, lam: float) -> str:
        """The skip key of training seed ``seed`` at ``lam``: settings, data, encoders, G's weights, code."""
        if seed not in self._generator_keys:  # its G's weights, read once (GBs at sd2's size)
            self._generator_keys[seed] = generator_digest(self.paths.generator(self.spec.generator, seed))
        return config_hash(
            to_dict(self.params.assistant),
            asdict(self.sampling),
            seed,
            self.spec.distance,
            lam,
            self.clip_key,
            self.lm_key,
            self._generator_keys[seed],
            self.data_key,
            self.code,
        )

    def is_trained(self, seed: int, lam: float) -> bool:
        """Whether seed ``seed`` at ``lam`` is trained with this key and published."""
        member = read_marker(self.paths.assistant(self.name, seed) / "grid" / f"lambda-{lam:g}", ASSISTANT_MARKER)
        published = (self.paths.assistant(self.name, seed) / "selection.json").is_file()
        return published and (member or {}).get("key") == self.key(seed, lam)

    def train_seed(self, seed: int, lambdas: list[float]) -> dict:
        """Train, validate and publish training seed ``seed`` of the assistant over ``lambdas``."""
        paths, spec = self.paths, self.spec
        main_process = self.accelerator.is_main_process
        generator = CafeGenerator.from_pretrained(paths.generator(spec.generator, seed), device=self.accelerator.device)
        out, grid = paths.assistant(self.name, seed), []
        for lam in lambdas:
            key = self.key(seed, lam)
            ckpt = paths.checkpoints("assistant") / f"{self.name}-seed-{seed}-lambda-{lam:g}-{key}"
            member = out / "grid" / f"lambda-{lam:g}"
            build = self._builder(seed, lam, ckpt, generator)
            grid.append(
                build_once(
                    member, key=key, marker=ASSISTANT_MARKER, build=build, checkpoint=ckpt, main_process=main_process
                )
            )
            self.accelerator.wait_for_everyone()
        if not main_process:
            return {}
        best = max(grid, key=lambda r: r["validation"]["score"])
        chosen = out / "grid" / f"lambda-{best['lambda']:g}"
        for file in ("assistant.safetensors", "assistant_config.json"):
            shutil.copyfile(chosen / file, out / f".{file}.tmp")
            (out / f".{file}.tmp").replace(out / file)
        entry = {
            "chosen_lambda": best["lambda"],
            "grid": [
                {"lambda": r["lambda"], **r["validation"], **{f"train_{k}": v for k, v in r["final"].items()}}
                for r in grid
            ],
        }
        atomic_write_json(out / "selection.json", entry)
        logger.info(
            "assistant %s seed %d: lambda %g (validation score %.4f)",
            self.name,
            seed,
            best["lambda"],
            best["validation"]["score"],
        )
        return entry

    def _builder(self, seed: int, lam: float, ckpt: Path, generator: CafeGenerator):
        params, spec, a, accelerator = self.params, self.spec, self.params.assistant, self.accelerator
        training = AssistantTraining(
            a.steps, a.batch_size, a.lr, a.weight_decay, a.checkpoint_every, seed, compute=params.compute.assistant
        )

        def build(folder: Path | None) -> dict:
            config = AssistantConfig(
                self.patches.shape[-1], self.targets.shape[-1], lambda_=lam, distance=spec.distance
            )
            torch.manual_seed(seed)
            assistant = CafeAssistant.from_pretrained(
                params.profile.lm,
                config=config,
                model_root=self.model_root,
                device=accelerator.device,
                dtype=self.lm_dtype,
            )
            prompts = [assistant.encode_prompt(m) for m in self.train_set.messages]
            responses = [assistant.encode_response(r) for r in self.train_set.responses]
            run_params = {"distance": spec.distance, "lambda": lam, "training_seed": seed}
            main = folder is not None
            nested = tracking.start_run(f"seed-{seed}/lambda-{lam:g}", params, log_params=run_params, root=self.root)
            with nested if main else contextlib.nullcontext():
                stats = train_assistant(
                    assistant, prompts, responses, self.patches, self.targets, training, ckpt, accelerator=accelerator
                )
                if not main:
                    return {}
                pipe = CafePipeline.from_parts(
                    assistant, self.clip, self.dino, generator, self.sampling, a.max_new_tokens
                )
                validation, figure = validate_assistant(
                    pipe, self.source, self.val_set, self.eval_clip, seed=params.seed
                )
                tracking.log_metrics({f"val/{k}": v for k, v in validation.items()})
                tracking.log_image(figure, "validation_samples")
                assistant.save_pretrained(folder)
                tracking.log_artifacts(folder, "assistant")
            return {"lambda": lam, "distance": spec.distance, "final": stats, "validation": validation}

        return build


def validate_assistant(pipe, source, dialogues, eval_clip, *, seed: int, batch_size: int = 64) -> tuple[dict, object]:
    """Validation figures of one trained assistant, and a grid of its drawings.

    score: eval-CLIP cosine between G(c_hat, d) and the true target y (what picks lambda);
    cosine: between c_hat and E_c(y); context_accuracy: the response commits to a context that
    fulfils the request (any of a vague wish's), where the data source can judge it.
    """
    import torch.nn.functional as F

    texts, c_hats, images = [], [], []
    for i in range(0, len(dialogues), batch_size):
        t, c, img, _ = pipe.respond(
            list(dialogues.x[i : i + batch_size]), dialogues.messages[i : i + batch_size], seed=seed + i
        )
        texts += t
        c_hats.append(c)
        images.append(img)
    c_hat, images = torch.cat(c_hats), np.concatenate(images)
    true = pipe.clip.image_embeds(dialogues.y).float().cpu()
    drawn = F.cosine_similarity(
        eval_clip.image_embeds(images, normalize=True), eval_clip.image_embeds(dialogues.y, normalize=True)
    )
    hits = [source.response_fulfils(s, t, v) for t, s, v in zip(texts, dialogues.subject_ids, dialogues.valid)]
    result = {
        "score": float(drawn.mean()),
        "cosine": float(F.cosine_similarity(c_hat, true).mean()),
        "norm_ratio": float((c_hat.norm(dim=-1) / true.norm(dim=-1)).mean()),
    }
    if None not in hits:  # a source that cannot judge the words leaves the figure out
        result["context_accuracy"] = float(np.mean(hits))
    rows = min(8, len(dialogues))
    figure = image_grid(
        [list(dialogues.x[:rows]), list(dialogues.y[:rows]), list(images[:rows])],
        row_titles=["photo x", "target y", "G(c_hat, d)"],
    )
    return result, figure


def _dialogue_digest(dialogues) -> str:
    """What a set of dialogues holds (photos, targets, chats, answers): a user's data that changes
    retrains the assistant even where the stage's params do not."""
    d = dialogues

    def images(rows) -> str:  # a streamed set names its content without decoding it
        return rows.digest() if isinstance(rows, ImageRows) else photo_digest(rows)

    return config_hash(images(d.x), images(d.y), d.messages, d.responses, d.kinds, d.valid)
