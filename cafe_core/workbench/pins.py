"""What DVC tracks in place of a real checkpoint: a record of which snapshot a name resolves to.

Under a profile of real checkpoints (``sd2``) the weights live outside the project, in the Hugging
Face cache or under ``CAFE_MODEL_ROOT``; ``pretrain_world`` writes this record per role instead of
training (``models/world/<role>/checkpoint.json``), and every later stage depends on it.
"""

from __future__ import annotations

import os
import pathlib

from ..utils.hub import resolve_model

__all__ = ["checkpoint_pin"]


def checkpoint_pin(name_or_path: str | os.PathLike, *, model_root: str | os.PathLike | None = None) -> dict:
    """What identifies the checkpoint ``name_or_path`` resolves to, without reading its weights.

    Returns ``{"name", "revision", "files"}``, no path (the same snapshot in another cache is the same
    checkpoint). ``files`` maps each file (relative path) to its content id: in the Hugging Face cache
    the blob's name (the file's sha256, or git sha1 for small files), ``revision`` the snapshot's
    commit; in a plain folder ``"<size>:<mtime_ns>"``, ``revision`` None. A pipeline that tracks this
    record reruns what reads a checkpoint when another snapshot or a changed file takes its place.
    """
    path = resolve_model(name_or_path, model_root=model_root)
    in_cache = path.parent.name == "snapshots"
    files = {}
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path).as_posix()
        if file.is_symlink() and in_cache:
            files[rel] = pathlib.Path(os.readlink(file)).name
        else:
            stat = file.stat()
            files[rel] = f"{stat.st_size}:{stat.st_mtime_ns}"
    return {
        "name": os.fspath(name_or_path),
        "revision": path.name if in_cache else None,
        "files": files,
    }
