"""Content keys: what caches, skip markers and CLI sessions are keyed by."""

from __future__ import annotations

import hashlib
import json

import numpy as np

__all__ = ["config_hash", "file_digest", "photo_digest"]


def config_hash(*parts: object) -> str:
    """12 hex digits of SHA-256 over the JSON of ``parts`` (keys sorted; other objects by ``str``)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def photo_digest(array: np.ndarray) -> str:
    """Identity of a photo's pixels: the feature cache's key, and what a CLI session is bound to."""
    return hashlib.sha256(array.tobytes()).hexdigest()[:16] + "x".join(map(str, array.shape))


def file_digest(path) -> str:
    """16 hex digits of SHA-256 over a file's bytes: links a result file to the run that wrote it."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]
