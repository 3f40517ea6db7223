"""Stage ``train_assistant@<name>``: M (eq. 2) once per lambda of its grid; the best on validation is published."""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from ...data.features import cached_features
from ...models.assistant import AssistantConfig, CafeAssistant
from ...models.encoders import ClipEncoder, DinoEncoder
from ...models.generator import CafeGenerator
from ...pipeline import CafePipeline, Sampling
from ...utils.digest import config_hash
from ...utils.files import atomic_write_json
from .. import tracking
from ..artifacts import build_once, read_marker
from ..code_deps import code_digest
from ..config import Params, to_dict
from ..paths import ProjectPaths
from ..plots import image_grid
from ..sources import training_source
from ..training import AssistantTraining, train_assistant
from .common import encoder_key
from .train_generator import GENERATOR_MARKER

__all__ = ["ASSISTANT_MARKER", "train_assistant_stage", "validate_assistant"]

logger = logging.getLogger(__name__)

ASSISTANT_MARKER = "cafe_assistant.json"


def train_assistant_stage(params: Params, root: Path, name: str, *, accelerator=None) -> dict:
    """Train assistant ``name`` once per lambda of its grid, validate each, publish the best.

    Fit and validation dialogues come from disjoint training-split subjects (held-out subjects
    are kept for the tables). The score that picks lambda is end to end and the same for both
    distances: evaluation-CLIP similarity between G(c_hat, d) and the true target y.
    """
    from accelerate import Accelerator

    if name not in params.assistants:
        raise KeyError(
            f"unknown assistant {name!r} (params.yaml key 'assistants'); known: {', '.join(params.assistants)}"
        )
    paths = ProjectPaths(root)
    spec, a = params.assistants[name], params.assistant
    accelerator = accelerator or Accelerator()
    source, model_root = training_source(params, root), paths.model_root(params.profile)
    common = {"multi_turn_p": a.multi_turn_p, "cache_dir": paths.dialogues}
    train_set = source.dialogues(a.dialogues, part="fit", seed=params.seed, **common)
    val_set = source.dialogues(a.val_dialogues, part="val", seed=params.seed + 1, **common)
    gen_spec = params.generators[a.generator]  # c_hat must live in the CLIP space G reads
    clip = ClipEncoder.from_pretrained(gen_spec.clip, model_root=model_root, device=accelerator.device)
    dino = DinoEncoder.from_pretrained(gen_spec.dino, model_root=model_root, device=accelerator.device)
    clip_key = encoder_key(params, paths, gen_spec.clip)
    patches = cached_features(
        f"clip-patches-{gen_spec.clip}",
        train_set.x,
        clip.patch_features,
        key_parts=(clip_key,),
        cache_dir=paths.features,
    )
    targets = cached_features(
        f"clip-{gen_spec.clip}", train_set.y, clip.image_embeds, key_parts=(clip_key,), cache_dir=paths.features
    )
    generator = CafeGenerator.from_pretrained(paths.generator(a.generator), device=accelerator.device)
    generator_key = read_marker(paths.generator(a.generator), GENERATOR_MARKER)["key"]
    eval_clip = ClipEncoder.from_pretrained(params.profile.eval_clip, model_root=model_root, device=accelerator.device)
    training = AssistantTraining(a.steps, a.batch_size, a.lr, a.weight_decay, a.checkpoint_every, params.seed)
    lm_dtype = (
        torch.bfloat16 if accelerator.device.type == "cuda" else torch.float32
    )  # the frozen LM in half precision on GPU
    out = paths.assistant(name)
    sampling = params.generator.sampling()  # validation draws
    lm_key, code = encoder_key(params, paths, params.profile.lm), code_digest(__name__)
    main_process = accelerator.is_main_process
    stage_run = tracking.start_run(f"train_assistant@{name}", params, log_params={"assistant": to_dict(a)}, root=root)
    grid = []
    with stage_run if main_process else contextlib.nullcontext():
        for lam in spec.lambdas:
            key = config_hash(
                to_dict(a), sampling, params.seed, spec.distance, lam, clip_key, lm_key, generator_key, code
            )
            ckpt = paths.checkpoints("assistant") / f"{name}-lambda-{lam:g}-{key}"

            def build(folder: Path | None, lam: float = lam, ckpt: Path = ckpt) -> dict:
                config = AssistantConfig(patches.shape[-1], targets.shape[-1], lambda_=lam, distance=spec.distance)
                torch.manual_seed(params.seed)
                assistant = CafeAssistant.from_pretrained(
                    params.profile.lm, config=config, model_root=model_root, device=accelerator.device, dtype=lm_dtype
                )
                prompts = [assistant.encode_prompt(m) for m in train_set.messages]
                responses = [assistant.encode_response(r) for r in train_set.responses]
                run_params = {"distance": spec.distance, "lambda": lam}
                main = folder is not None
                nested = tracking.start_run(f"lambda-{lam:g}", params, log_params=run_params, root=root)
                with nested if main else contextlib.nullcontext():
                    stats = train_assistant(
                        assistant, prompts, responses, patches, targets, training, ckpt, accelerator=accelerator
                    )
                    if not main:
                        return {}
                    pipe = CafePipeline(
                        assistant, clip, dino, generator, Sampling.from_params(params.generator), a.max_new_tokens
                    )
                    validation, figure = validate_assistant(pipe, source, val_set, eval_clip, seed=params.seed)
                    tracking.log_metrics({f"val/{k}": v for k, v in validation.items()})
                    tracking.log_image(figure, "validation_samples")
                    assistant.save_pretrained(folder)
                    tracking.log_artifacts(folder, "assistant")
                return {"lambda": lam, "distance": spec.distance, "final": stats, "validation": validation}

            member = out / "grid" / f"lambda-{lam:g}"
            grid.append(
                build_once(
                    member, key=key, marker=ASSISTANT_MARKER, build=build, checkpoint=ckpt, main_process=main_process
                )
            )
            accelerator.wait_for_everyone()
        if main_process:
            best = max(grid, key=lambda r: r["validation"]["score"])
            tracking.log_metrics(
                {"chosen_lambda": best["lambda"], **{f"val/{k}": v for k, v in best["validation"].items()}}
            )
    if not accelerator.is_main_process:
        return {}
    chosen = out / "grid" / f"lambda-{best['lambda']:g}"
    for file in ("assistant.safetensors", "assistant_config.json"):
        shutil.copyfile(chosen / file, out / f".{file}.tmp")
        (out / f".{file}.tmp").replace(out / file)
    selection = {
        "assistant": name,
        "distance": spec.distance,
        "chosen_lambda": best["lambda"],
        "criterion": "validation score: eval-CLIP cosine of G(c_hat, d) to the true target y",
        "grid": [
            {"lambda": r["lambda"], **r["validation"], **{f"train_{k}": v for k, v in r["final"].items()}} for r in grid
        ],
    }
    atomic_write_json(out / "selection.json", selection)
    atomic_write_json(paths.assistant_selection(name), selection)
    logger.info(
        "assistant %s: lambda %g chosen on validation (score %.4f)", name, best["lambda"], best["validation"]["score"]
    )
    return selection


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
