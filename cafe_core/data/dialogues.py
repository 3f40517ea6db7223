"""The assistant's training format: chats about a subject photo x, each with its response and target y."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..utils.files import atomic_save_safetensors
from .dataset import ImageRows

__all__ = ["DialogueSet", "load_dialogues", "save_dialogues"]


@dataclass
class DialogueSet:
    """Chats about a subject photo x, each ending in a request, with the response and target y.

    ``messages[i]`` is the chat up to the request being answered (earlier turns included, for
    multi-turn samples); ``responses[i]`` the answer; ``y`` renders the context it commits to.
    """

    messages: list[list[dict]]
    responses: list[str]
    kinds: list[str]
    # uint8 (N, H, W, 3) arrays, or a dataset's ImageRows streamed (a training set too large to decode)
    x: np.ndarray | ImageRows  # the user's plain photo of the subject
    y: np.ndarray | ImageRows  # the subject in the answered request's context
    subject_ids: np.ndarray  # int64 (N,)
    context_ids: np.ndarray  # int64 (N,): context of y
    valid: list[list[str]]  # names of the contexts that fulfil each request (several for vague wishes)

    def __len__(self) -> int:
        return len(self.responses)


def save_dialogues(dialogues: DialogueSet, path: str | Path) -> Path:
    """One safetensors file: images and ids as tensors, the texts as JSON metadata; written atomically."""
    d = dialogues
    meta = {"messages": d.messages, "responses": d.responses, "kinds": d.kinds, "valid": d.valid}
    arrays = {"x": d.x, "y": d.y, "subject_ids": d.subject_ids, "context_ids": d.context_ids}
    return atomic_save_safetensors(arrays, path, metadata={"meta": json.dumps(meta)})


def load_dialogues(path: str | Path) -> DialogueSet:
    """What :func:`save_dialogues` wrote."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    arrays = load_file(path)
    with safe_open(path, "np") as f:
        meta = json.loads(f.metadata()["meta"])
    return DialogueSet(meta["messages"], meta["responses"], meta["kinds"], valid=meta["valid"], **arrays)
