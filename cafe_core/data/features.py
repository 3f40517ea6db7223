"""Frozen encoder features, computed once per experiment and cached on disk.

Frozen encoders see each image once: training G then reads tensors, which is what makes a
training step cheap with DINOv2-giant and CLIP-L at 336 px (see scripts/benchmark_generation.py).

Why a ``.npy`` file opened as a memory map (and not safetensors, as before): a training step
gathers a random batch of rows, and numpy's memory map reads just those rows' pages, so a cache
larger than memory trains as one that fits (DINOv2-giant's patch tokens of 1M photos are 1.6 TB in
float32); safetensors' lazy slices are contiguous ranges only. The file is filled a batch at a
time and its progress recorded, so a run killed while encoding resumes at the rows it had not
written, and the finished file is renamed into place: a reader never sees half a cache. A file
lock beside it lets one process fill it while the others that want it wait, then read it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from filelock import FileLock
from tqdm.auto import tqdm

from ..utils.digest import config_hash, photo_digest
from ..utils.files import atomic_write_json

__all__ = ["ImageSource", "cached_features"]


class ImageSource(Protocol):
    """Images streamed a batch at a time: :class:`cafe_core.data.dataset.ImageRows`."""

    def __len__(self) -> int: ...

    def batches(self, batch_size: int) -> Iterator[np.ndarray]: ...

    def digest(self) -> str: ...


def cached_features(
    name: str,
    images: np.ndarray | ImageSource,
    encode: Callable[[np.ndarray], torch.Tensor],
    *,
    key_parts: tuple,
    cache_dir: str | os.PathLike | None,
    batch_size: int = 256,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``encode(uint8 batch (b, H, W, 3)) -> (b, ...)`` over every image, cached on disk.

    ``images``: uint8 (N, H, W, 3), or an :class:`ImageSource` that streams them. The cache file is
    keyed by ``name``, ``key_parts`` (say, the encoder's identity), the images' digest and ``dtype``.
    Returns (N, ...) ``dtype`` features; with a ``cache_dir`` they stay on disk, memory-mapped
    (copy on write: changing the tensor never changes the file), so indexing rows reads those rows.
    """
    if not len(images):
        raise ValueError(f"features {name}: no images to encode")
    if cache_dir is None:
        return torch.cat([encode(batch).detach().to("cpu", dtype) for batch in _batches(images, batch_size)])
    digest = images.digest() if hasattr(images, "digest") else photo_digest(np.ascontiguousarray(images))
    path = Path(cache_dir) / f"features-{name}-{config_hash(*key_parts, digest, str(dtype))}.npy"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        # one filler at a time: the processes of a multi-process stage, or two stages sharing an encoder
        with FileLock(str(path) + ".lock"):
            if not path.is_file():  # filled while this process waited
                _fill(path, name, images, encode, batch_size, dtype)
    return torch.from_numpy(np.load(path, mmap_mode="c")).view(dtype)


def _batches(images: np.ndarray | ImageSource, batch_size: int) -> Iterator[np.ndarray]:
    if isinstance(images, np.ndarray):
        return (images[i : i + batch_size] for i in range(0, len(images), batch_size))
    return images.batches(batch_size)


_STORAGE = {torch.float32: np.float32, torch.float16: np.float16, torch.bfloat16: np.uint16}
"""numpy dtype each torch dtype is stored as (numpy has no bfloat16: its bits, viewed back by torch)."""


def _fill(path: Path, name: str, images, encode, batch_size: int, dtype: torch.dtype) -> None:
    """Encode every image into ``path`` through a partial file that a killed run resumes."""
    if dtype not in _STORAGE:
        raise ValueError(f"features are stored as one of {list(_STORAGE)}, not {dtype}")
    partial, progress = path.with_suffix(".partial.npy"), path.with_suffix(".progress.json")
    total = len(images)
    done = json.loads(progress.read_text())["rows"] if progress.is_file() and partial.is_file() else 0
    out = np.lib.format.open_memmap(partial, mode="r+") if done else None
    bar = tqdm(total=total, initial=done, desc=f"features {name}", unit="image", mininterval=2.0)
    row = 0
    for batch in _batches(images, batch_size):
        if row + len(batch) <= done:  # written before the run was killed
            row += len(batch)
            continue
        skip = done - row if row < done else 0
        features = encode(batch[skip:]).detach().to("cpu", dtype)
        if out is None:
            shape = (total, *features.shape[1:])
            out = np.lib.format.open_memmap(partial, mode="w+", dtype=_STORAGE[dtype], shape=shape)
        start = row + skip
        out[start : start + len(features)] = (
            features.view(torch.uint16) if dtype == torch.bfloat16 else features
        ).numpy()
        row = start + len(features)
        out.flush()
        atomic_write_json(progress, {"rows": row})
        bar.update(len(features))
    bar.close()
    if row != total:
        raise ValueError(f"features {name}: the images streamed {row} rows, not the {total} they announced")
    del out
    os.replace(partial, path)
    progress.unlink()
