"""Measurements: did each world foundation model learn what its real counterpart knows?

Every probe runs on *evaluation* subjects (never seen in pretraining) and reports its
figure beside chance, as `{"value": v, "chance": c}`. Models are loaded back through the
same loaders a user with real checkpoints goes through (`cafe_core.encoders`), so the
probes also check the saved layouts.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..workbench.config import Params
from .datasets import dialogue_texts, render_set
from .world import DOMAINS, World, make_world

logger = logging.getLogger(__name__)


def _metric(value: float, chance: float, **extra) -> dict:
    return {"value": round(float(value), 4), "chance": round(float(chance), 4), **extra}


def clip_caption_retrieval(clip, world: World, n: int, seed: int, cache_dir: Path | None) -> dict:
    """Top-1 retrieval of an image's prompt among every (class, context) prompt of its domain."""
    data = render_set(world, n, split="eval", seed=seed + 101, cache_dir=cache_dir, neutral_p=0.0)
    hits, chance = [], []
    for d, domain in enumerate(DOMAINS):
        rows = np.flatnonzero(data.domains == d)
        if len(rows) == 0:
            continue
        subjects = world.subjects(domain)
        by_class = {s.cls: s for s in subjects}  # one representative per class: prompts name the class only
        candidates = [(cls, c.id) for cls in sorted(by_class) for c in world.contexts(domain)]
        prompts = [world.prompt(by_class[cls], world.contexts(domain)[cid]) for cls, cid in candidates]
        text = clip.text_embeds(prompts, normalize=True)
        image = clip.image_embeds(data.images[rows], normalize=True)
        pred = (image @ text.T).argmax(1).cpu().numpy()
        index = {k: i for i, k in enumerate(candidates)}
        truth = np.array([index[(world.subject(int(data.subject_ids[r])).cls, int(data.context_ids[r]))] for r in rows])
        hits.extend(pred == truth)
        chance.extend([1.0 / len(candidates)] * len(rows))
    return _metric(np.mean(hits), np.mean(chance), images=int(len(hits)))


def identity_views(world: World, domain: str, views: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per evaluation subject: a neutral photo (gallery) and `views` renders in recontextualised scenes."""
    subjects = world.subjects(domain, "eval")
    scenes = [c for c in world.contexts(domain) if c.family == "recontextualization"]
    rng = np.random.default_rng([seed, 7])
    gallery = world.render_batch(subjects, [None] * len(subjects), [int(rng.integers(2**31)) for _ in subjects])
    q_subjects = [s for s in subjects for _ in range(views)]
    q_contexts = [scenes[int(rng.integers(len(scenes)))] for _ in q_subjects]
    queries = world.render_batch(q_subjects, q_contexts, [int(rng.integers(2**31)) for _ in q_subjects])
    labels = np.repeat(np.arange(len(subjects)), views)
    return gallery, queries, labels


def dino_identity_nn(dino, world: World, views: int, seed: int) -> dict:
    """Nearest-neighbour identity accuracy: scene renders matched to neutral photos by CLS cosine."""
    accs, chances, per_domain = [], [], {}
    for domain in DOMAINS:
        gallery, queries, labels = identity_views(world, domain, views, seed)
        g = dino.cls_embeds(gallery, normalize=True)
        q = dino.cls_embeds(queries, normalize=True)
        pred = (q @ g.T).argmax(1).cpu().numpy()
        acc = float(np.mean(pred == labels))
        per_domain[domain] = _metric(acc, 1.0 / len(gallery))
        accs.extend(pred == labels)
        chances.extend([1.0 / len(gallery)] * len(labels))
    return _metric(np.mean(accs), np.mean(chances), per_domain=per_domain)


def face_verification(face, world: World, pairs: int, seed: int) -> dict:
    """Same-or-different face pairs on evaluation faces; threshold fit on training faces."""

    def pair_scores(split: str, salt: int) -> tuple[np.ndarray, np.ndarray]:
        subjects = world.subjects("face", split)
        scenes = [c for c in world.contexts("face") if c.family in ("recontextualization", "accessorization")]
        rng = np.random.default_rng([seed, salt])
        a_s, b_s, same = [], [], []
        for k in range(pairs):
            a = subjects[int(rng.integers(len(subjects)))]
            b = a if k % 2 == 0 else subjects[int(rng.integers(len(subjects)))]
            if k % 2 == 1:
                while b.id == a.id:
                    b = subjects[int(rng.integers(len(subjects)))]
            a_s.append(a)
            b_s.append(b)
            same.append(a.id == b.id)
        ctx = lambda: scenes[int(rng.integers(len(scenes)))]  # noqa: E731
        img_a = world.render_batch(a_s, [ctx() for _ in a_s], [int(rng.integers(2**31)) for _ in a_s])
        img_b = world.render_batch(b_s, [ctx() for _ in b_s], [int(rng.integers(2**31)) for _ in b_s])
        score = (face.embed(img_a) * face.embed(img_b)).sum(-1).float().cpu().numpy()
        return score, np.array(same)

    train_score, train_same = pair_scores("train", 11)
    candidates = np.unique(train_score)
    accuracy = [np.mean((train_score >= t) == train_same) for t in candidates]
    threshold = float(candidates[int(np.argmax(accuracy))])
    score, same = pair_scores("eval", 13)
    return _metric(np.mean((score >= threshold) == same), 0.5, threshold=round(threshold, 4), pairs=int(len(same)))


def lm_perplexity(lm, tokenizer, world: World, n: int, seed: int, multi_turn_p: float = 0.0) -> dict:
    """Per-token perplexity on dialogues about evaluation subjects (the training mix of single- and
    two-request chats); chance = uniform over the vocabulary."""
    from .pretrain import tokenize_dialogues

    texts = dialogue_texts(world, n, split="eval", seed=seed + 303, tokenizer=tokenizer, multi_turn_p=multi_turn_p)
    ids, labels = tokenize_dialogues(tokenizer, texts)
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(ids), 64):
            x, y = ids[start : start + 64], labels[start : start + 64]
            logits = lm(input_ids=x).logits[:, :-1].float()
            target = y[:, 1:]
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum", ignore_index=-100
            )
            total += float(loss)
            count += int((target != -100).sum())
    return _metric(math.exp(total / count), len(tokenizer), tokens=count, lower_is_better=True)


def prompt_alignment(images: np.ndarray, prompts: list[str], eval_clip, seed: int) -> tuple[dict, dict]:
    """Eval-CLIP agreement of images with their prompts.

    Returns two metrics: mean cosine to the image's own prompt against mean cosine to a
    shuffled prompt (chance), and top-1 retrieval of the own prompt among the distinct
    prompts of the set (chance 1/#prompts).
    """
    n = len(prompts)
    rng = np.random.default_rng([seed, 405])
    img = eval_clip.image_embeds(images, normalize=True)
    txt = eval_clip.text_embeds(prompts, normalize=True)
    own = (img * txt).sum(-1)
    perm = rng.permutation(n)
    while n > 1 and np.any(perm == np.arange(n)):
        perm = rng.permutation(n)
    shuffled = (img * txt[torch.from_numpy(perm)]).sum(-1)
    unique = sorted(set(prompts))
    pred = (img @ eval_clip.text_embeds(unique, normalize=True).T).argmax(1).cpu().numpy()
    truth = np.array([unique.index(p) for p in prompts])
    return _metric(own.mean(), shuffled.mean(), samples=n), _metric(
        np.mean(pred == truth), 1.0 / len(unique), samples=n
    )


def t2i_probe_prompts(world: World, n: int, seed: int) -> tuple[list, list, list[str]]:
    """Prompts about evaluation subjects in random contexts, with their ground truth."""
    rng = np.random.default_rng([seed, 404])
    subjects = world.subjects(split="eval")
    chosen = [subjects[int(rng.integers(len(subjects)))] for _ in range(n)]
    contexts = [world.contexts(s.domain)[int(rng.integers(len(world.contexts(s.domain))))] for s in chosen]
    return chosen, contexts, [world.prompt(s, c) for s, c in zip(chosen, contexts)]


def generate(t2i, prompts: list[str], *, steps: int, guidance: float, seed: int, batch: int = 50) -> np.ndarray:
    return np.concatenate(
        [
            t2i(prompts[i : i + batch], num_inference_steps=steps, guidance_scale=guidance, seed=seed + i)
            for i in range(0, len(prompts), batch)
        ]
    )


def world_metrics(params: Params, model_root: Path, cache_dir: Path) -> tuple[dict, dict]:
    """All learned-ness probes of the world models in ``model_root`` (renders cached in ``cache_dir``).

    Returns (metrics, samples): metrics maps a name to {"value", "chance", ...}; samples
    holds the text-to-image probe's generated images, ground-truth renders and prompts.
    """
    from transformers import AutoTokenizer, LlamaForCausalLM

    from ..models.encoders import ClipEncoder, DinoEncoder, FaceEmbedder
    from ..models.text_to_image import TextToImage

    world = make_world(params)
    cache = cache_dir
    e, seed = params.world_eval, params.seed
    out: dict = {}
    clip = ClipEncoder.from_pretrained("clip", model_root=model_root)
    out["clip_caption_retrieval_top1"] = clip_caption_retrieval(clip, world, e.retrieval_images, seed, cache)
    clip_eval = ClipEncoder.from_pretrained("clip_eval", model_root=model_root)
    out["clip_eval_caption_retrieval_top1"] = clip_caption_retrieval(clip_eval, world, e.retrieval_images, seed, cache)
    for name in ("dino", "dino_eval"):
        dino = DinoEncoder.from_pretrained(name, model_root=model_root)
        out[f"{name}_nn_identity_accuracy"] = dino_identity_nn(dino, world, e.views_per_subject, seed)
    face = FaceEmbedder.from_pretrained("face_id", model_root=model_root)
    out["face_id_verification_accuracy"] = face_verification(face, world, e.face_pairs, seed)
    lm = LlamaForCausalLM.from_pretrained(model_root / "lm", use_safetensors=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_root / "lm")
    out["lm_perplexity"] = lm_perplexity(lm, tokenizer, world, e.lm_dialogues, seed, params.pretrain.multi_turn_p)
    t2i = TextToImage.from_pretrained("t2i", model_root=model_root)
    p = params.pretrain.t2i
    subjects, contexts, prompts = t2i_probe_prompts(world, e.t2i_samples, seed)
    images = generate(t2i, prompts, steps=p.sample_steps, guidance=p.guidance_scale, seed=seed)
    out["t2i_eval_clip_similarity"], out["t2i_eval_clip_prompt_retrieval_top1"] = prompt_alignment(
        images, prompts, clip_eval, seed
    )
    # The same probes on ground-truth renders of the prompts: the ceiling for the two figures above.
    real = world.render_batch(subjects, contexts, list(range(len(subjects))))
    out["real_renders_eval_clip_similarity"], out["real_renders_eval_clip_prompt_retrieval_top1"] = prompt_alignment(
        real, prompts, clip_eval, seed
    )
    return out, {"generated": images, "real": real, "prompts": prompts}


def metrics_table(metrics: dict) -> str:
    """Markdown table of {"value", "chance"} figures."""
    lines = ["| metric | value | chance |", "|---|---|---|"]
    for name, m in metrics.items():
        lines.append(f"| {name} | {m['value']:.4g} | {m['chance']:.4g} |")
    return "\n".join(lines)


def small_encoder_metrics(params: Params, model_root: Path, cache_dir: Path) -> dict:
    """The learned-ness probes of table 5's smaller CLIP and DINO, beside the same chance."""
    from ..models.encoders import ClipEncoder, DinoEncoder

    world = make_world(params)
    e, seed = params.world_eval, params.seed
    clip = ClipEncoder.from_pretrained("clip_small", model_root=model_root)
    dino = DinoEncoder.from_pretrained("dino_small", model_root=model_root)
    return {
        "clip_small_caption_retrieval_top1": clip_caption_retrieval(clip, world, e.retrieval_images, seed, cache_dir),
        "dino_small_nn_identity_accuracy": dino_identity_nn(dino, world, e.views_per_subject, seed),
    }
