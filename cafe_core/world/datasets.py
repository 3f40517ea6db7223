"""Datasets of the CAFE-mini world, rendered once and cached, and the world's tokenizers.

Rendering is cheap but not free; every pretraining stage reads the same cached arrays.
Cache files are keyed by a hash of what produced them and written atomically, so a
killed run never leaves a half-written dataset behind.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file
from tqdm.auto import tqdm

from ..data.dialogues import DialogueSet, load_dialogues, save_dialogues
from ..utils.digest import config_hash
from ..utils.files import atomic_save_safetensors
from .world import DOMAINS, TURN_KINDS, Subject, Turn, World, words

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


# --- tokenizers -----------------------------------------------------------------------------------


def build_tokenizer(world: World, *, for_clip: bool) -> transformers.PreTrainedTokenizerFast:  # noqa: F821
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


# --- rendered datasets ----------------------------------------------------------------------------


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
            {
                "images": out.images,
                "subject_ids": out.subject_ids,
                "context_ids": out.context_ids,
                "domains": out.domains,
            },
            path,
            metadata={"meta": json.dumps({"captions": captions})},
        )
    return out


def dialogue_texts(world: World, n: int, *, split: str, seed: int, tokenizer, multi_turn_p: float = 0.0) -> list[str]:
    """Chat-formatted dialogues (all three user-turn kinds) of `split` subjects; with probability
    `multi_turn_p` a second request follows an answered first one, as in chat models' data."""
    rng = np.random.default_rng([seed, 29])
    subjects = world.subjects(split=split)
    texts = []
    for _ in range(n):
        subject = subjects[int(rng.integers(len(subjects)))]
        chat, turn = chat_turns(world, subject, rng, multi_turn_p)
        texts.append(
            tokenizer.apply_chat_template(chat + [{"role": "assistant", "content": turn.response}], tokenize=False)
        )
    return texts


def chat_turns(
    world: World, subject: Subject, rng: np.random.Generator, multi_turn_p: float
) -> tuple[list[dict], Turn]:
    """A chat about `subject` that ends with a user request, and the world's turn for that request.

    With probability `multi_turn_p` an earlier request and its answer come first; the last
    request is then the one to answer ("... now show me this ball in the snow").
    """
    chat: list[dict] = []
    if rng.random() < multi_turn_p:
        first = world.turn(subject, TURN_KINDS[int(rng.integers(len(TURN_KINDS)))], rng)
        chat += [{"role": "user", "content": first.user}, {"role": "assistant", "content": first.response}]
    turn = world.turn(subject, TURN_KINDS[int(rng.integers(len(TURN_KINDS)))], rng)
    return chat + [{"role": "user", "content": turn.user}], turn


def check_vocabulary(tokenizer, texts: list[str]) -> None:
    """Fail loudly if the world ever writes a word the tokenizer maps to <unk>."""
    unk = tokenizer.unk_token_id
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if unk in ids:
            missing = [w for w in words(text) if tokenizer.convert_tokens_to_ids(w) == unk]
            raise ValueError(f"world text has words outside the vocabulary: {missing} in {text!r}")


# --- the assistant's dialogues: photo x, chat, target image y -------------------------------------


def validation_subjects(subjects: list[Subject], every: int = 10) -> tuple[list[Subject], list[Subject]]:
    """Split training-split subjects into (fit, validation): every `every`-th id validates.

    Held-out (`eval`) subjects stay untouched for the final tables; hyper-parameters such as
    lambda are chosen on these validation subjects instead.
    """
    fit = [s for s in subjects if s.id % every]
    val = [s for s in subjects if not s.id % every]
    return fit, val


def dialogue_set(
    world: World,
    subjects: list[Subject],
    n: int,
    *,
    seed: int,
    multi_turn_p: float = 0.0,
    cache_dir: str | os.PathLike | None = None,
) -> DialogueSet:
    """`n` dialogues about `subjects` (all three turn kinds), with rendered x and y, cached on disk.

    With probability `multi_turn_p` a dialogue has an earlier, already answered turn in another
    context: the model must then read the *last* request ("now ... in the snow") while the
    subject stays the one in the photo.
    """
    if not subjects:
        raise ValueError("dialogue_set needs at least one subject")
    if not 0.0 <= multi_turn_p <= 1.0:
        raise ValueError(f"multi_turn_p must be in [0, 1], got {multi_turn_p}")
    key = config_hash(world.config, sorted(s.id for s in subjects), n, seed, multi_turn_p)
    path = Path(cache_dir) / f"dialogues-{key}.safetensors" if cache_dir else None
    if path is not None and path.is_file():
        return load_dialogues(path)
    rng = np.random.default_rng([seed, 31])
    messages, responses, kinds, valid, chosen, contexts, x_seeds, y_seeds = [], [], [], [], [], [], [], []
    for _ in range(n):
        subject = subjects[int(rng.integers(len(subjects)))]
        chat, turn = chat_turns(world, subject, rng, multi_turn_p)
        messages.append(chat)
        responses.append(turn.response)
        kinds.append(turn.kind)
        valid.append(list(turn.valid))
        chosen.append(subject)
        contexts.append(turn.context)
        x_seeds.append(int(rng.integers(2**31)))
        y_seeds.append(int(rng.integers(2**31)))
    out = DialogueSet(
        messages,
        responses,
        kinds,
        x=world.render_batch(chosen, [None] * n, x_seeds),
        y=world.render_batch(chosen, contexts, y_seeds),
        subject_ids=np.array([s.id for s in chosen], np.int64),
        context_ids=np.array([c.id for c in contexts], np.int64),
        valid=valid,
    )
    if path is not None:
        save_dialogues(out, path)
    return out
