"""Atomic writes: a file or folder appears complete or not at all.

Every stage may be killed at any moment; writers put their output in a temporary sibling
(same filesystem) and rename it into place, so readers never see half a file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call `write(tmp_path)` on a temporary sibling of `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)

    return atomic_write(path, write)


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def atomic_save_safetensors(
    tensors: Mapping[str, Any], path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> Path:
    """safetensors of numpy arrays or torch tensors (judged by the first value)."""
    first = next(iter(tensors.values()))
    if type(first).__module__.startswith("torch"):
        from safetensors.torch import save_file
    else:
        from safetensors.numpy import save_file
    return atomic_write(path, lambda tmp: save_file(dict(tensors), tmp, metadata=metadata))


def publish_dir(tmp: str | os.PathLike, out: str | os.PathLike) -> None:
    """Replace folder `out` by the finished folder `tmp` (a sibling, so the rename is cheap)."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
