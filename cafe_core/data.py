"""Datasets of the CAFE-mini world, rendered once and cached, and the world's tokenizers.

Rendering is cheap but not free; every pretraining stage reads the same cached arrays.
Cache files are keyed by a hash of what produced them and written atomically, so a
killed run never leaves a half-written dataset behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file
from tqdm.auto import tqdm

from .files import atomic_save_safetensors
from .world import DOMAINS, Subject, World, words

logger = logging.getLogger(__name__)

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)
NEUTRAL = -1  # context id of the neutral "subject photo"
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}{{ '<s> [INST] ' + m['content'] + ' [/INST]' }}"
    "{% elif m['role'] == 'assistant' %}{{ ' ' + m['content'] + ' </s>' }}{% endif %}"
    "{% endfor %}"
)  # Llama-2-chat's layout, written in words our word-level vocabulary knows


def config_hash(*parts: object) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


# --- tokenizers ------------------------------------------------------------------------


def build_tokenizer(world: World, *, for_clip: bool) -> "transformers.PreTrainedTokenizerFast":  # noqa: F821
    """A word-level tokenizer over the world's closed vocabulary.

    The CLIP flavour wraps every text in <s> ... </s> (CLIP pools at the end token); the
    LM flavour adds nothing and carries a Llama-2-style chat template instead.
    """
    from tokenizers import (
        Regex,
        Tokenizer,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from transformers import PreTrainedTokenizerFast

    vocab_words = list(SPECIAL_TOKENS) + [w for w in world.vocabulary() if w not in SPECIAL_TOKENS]
    for extra in ("[", "]", "/", "inst"):  # the chat template's own words
        if extra not in vocab_words:
            vocab_words.append(extra)
    vocab = {w: i for i, w in enumerate(vocab_words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(r"[a-z0-9]+|[^a-z0-9]"), behavior="isolated")]
    )
    if for_clip:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, unk_token=UNK, bos_token=BOS, eos_token=EOS, model_max_length=64
    )
    if not for_clip:
        fast.chat_template = CHAT_TEMPLATE
    return fast


# --- rendered datasets ---------------------------------------------------------------


@dataclass
class RenderedSet:
    """Images of the world with their ground truth; index-aligned arrays."""

    images: np.ndarray  # uint8 (N, H, W, 3)
    subject_ids: np.ndarray  # int64 (N,)
    context_ids: np.ndarray  # int64 (N,), NEUTRAL for the plain subject photo
    domains: np.ndarray  # int64 (N,), index into world.DOMAINS
    captions: list[str]

    def __len__(self) -> int:
        return len(self.images)

    def tensor(self, index: np.ndarray | slice | None = None) -> torch.Tensor:
        """float (B, 3, H, W) in [0, 1]."""
        x = self.images if index is None else self.images[index]
        return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float().div_(255.0)


def sample_pairs(
    world: World, n: int, *, split: str, seed: int, domains: tuple[str, ...] = DOMAINS, neutral_p: float = 0.2
) -> tuple[list[Subject], list, list[int]]:
    """Draw (subject, context, render seed) triples: contexts uniform, neutral photos with `neutral_p`."""
    rng = np.random.default_rng([seed, 17])
    pools = {d: world.subjects(d, split) for d in domains}
    subjects, contexts, seeds = [], [], []
    for _ in range(n):
        domain = domains[int(rng.integers(len(domains)))]
        subject = pools[domain][int(rng.integers(len(pools[domain])))]
        ctxs = world.contexts(domain)
        context = None if rng.random() < neutral_p else ctxs[int(rng.integers(len(ctxs)))]
        subjects.append(subject)
        contexts.append(context)
        seeds.append(int(rng.integers(2**31)))
    return subjects, contexts, seeds


def render_set(
    world: World,
    n: int,
    *,
    split: str,
    seed: int,
    cache_dir: str | os.PathLike | None = None,
    domains: tuple[str, ...] = DOMAINS,
    neutral_p: float = 0.2,
) -> RenderedSet:
    """Render `n` captioned images of `split` subjects, reusing the cache when it exists."""
    key = config_hash(world.config, n, split, seed, domains, neutral_p)
    path = Path(cache_dir) / f"render-{split}-{key}.safetensors" if cache_dir else None
    if path is not None and path.is_file():
        arrays = load_file(path)
        from safetensors import safe_open

        with safe_open(path, "np") as f:
            meta = json.loads(f.metadata()["meta"])
        return RenderedSet(
            arrays["images"], arrays["subject_ids"], arrays["context_ids"], arrays["domains"], meta["captions"]
        )
    subjects, contexts, seeds = sample_pairs(world, n, split=split, seed=seed, domains=domains, neutral_p=neutral_p)
    rng = np.random.default_rng([seed, 23])
    images = np.empty((n, world.config.image_size, world.config.image_size, 3), np.uint8)
    chunk = 512
    for start in tqdm(range(0, n, chunk), desc=f"render {split}", unit_scale=chunk, mininterval=2.0):
        stop = min(n, start + chunk)
        images[start:stop] = world.render_batch(subjects[start:stop], contexts[start:stop], seeds[start:stop])
    captions = [world.caption(s, c, rng) for s, c in zip(subjects, contexts)]
    out = RenderedSet(
        images=images,
        subject_ids=np.array([s.id for s in subjects], np.int64),
        context_ids=np.array([NEUTRAL if c is None else c.id for c in contexts], np.int64),
        domains=np.array([DOMAINS.index(s.domain) for s in subjects], np.int64),
        captions=captions,
    )
    if path is not None:
        atomic_save_safetensors(
            {"images": out.images, "subject_ids": out.subject_ids, "context_ids": out.context_ids, "domains": out.domains},
            path,
            metadata={"meta": json.dumps({"captions": captions})},
        )
    return out


def dialogue_texts(world: World, n: int, *, split: str, seed: int, tokenizer) -> list[str]:
    """Chat-formatted single-turn dialogues (all three user-turn kinds) of `split` subjects."""
    rng = np.random.default_rng([seed, 29])
    subjects = world.subjects(split=split)
    kinds = ("declarative", "interrogative", "ambiguous")
    texts = []
    for _ in range(n):
        subject = subjects[int(rng.integers(len(subjects)))]
        turn = world.turn(subject, kinds[int(rng.integers(3))], rng)
        messages = [{"role": "user", "content": turn.user}, {"role": "assistant", "content": turn.response}]
        texts.append(tokenizer.apply_chat_template(messages, tokenize=False))
    return texts


def check_vocabulary(tokenizer, texts: list[str]) -> None:
    """Fail loudly if the world ever writes a word the tokenizer maps to <unk>."""
    unk = tokenizer.unk_token_id
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if unk in ids:
            missing = [w for w in words(text) if tokenizer.convert_tokens_to_ids(w) == unk]
            raise ValueError(f"world text has words outside the vocabulary: {missing} in {text!r}")


# --- frozen encoder features, computed once ------------------------------------------------


def cached_features(
    name: str,
    images: np.ndarray,
    encode,
    *,
    key_parts: tuple,
    cache_dir: str | os.PathLike | None,
    batch_size: int = 256,
) -> torch.Tensor:
    """`encode(uint8 batch) -> tensor` over all `images`, cached on disk under a key of `key_parts`.

    Frozen encoders see each image once per experiment: training G then reads tensors,
    which is what makes a training step cheap (see scripts/benchmark_generation.py).
    """
    from safetensors.torch import load_file as load_torch

    path = None
    if cache_dir is not None:
        digest = hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()[:12]
        path = Path(cache_dir) / f"features-{name}-{config_hash(*key_parts, digest)}.safetensors"
        if path.is_file():
            return load_torch(path)["features"]
    chunks = [
        encode(images[i : i + batch_size]).float().cpu()
        for i in tqdm(range(0, len(images), batch_size), desc=f"features {name}", mininterval=2.0)
    ]
    features = torch.cat(chunks)
    if path is not None:
        atomic_save_safetensors({"features": features.contiguous()}, path)
    return features
