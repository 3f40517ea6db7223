"""Frozen encoder features, computed once per experiment and cached on disk.

Frozen encoders see each image once: training G then reads tensors, which is what makes a
training step cheap with DINOv2-giant and CLIP-L at 336 px (see scripts/benchmark_generation.py).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..utils.digest import config_hash
from ..utils.files import atomic_save_safetensors

__all__ = ["cached_features"]


def cached_features(
    name: str,
    images: np.ndarray,
    encode,
    *,
    key_parts: tuple,
    cache_dir: str | os.PathLike | None,
    batch_size: int = 256,
) -> torch.Tensor:
    """``encode(uint8 batch) -> tensor`` over all ``images`` (N, H, W, 3), cached on disk.

    The cache file is keyed by ``key_parts`` (say, the encoder's identity) and the pixels' digest.
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
