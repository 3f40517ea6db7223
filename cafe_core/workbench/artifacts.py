"""Build a model folder once: reuse it when its marker records the same key, else build and publish it.

Every trained artefact (a world model, a generator, a member of an assistant's lambda grid) is a
folder with a JSON marker holding the key of what produced it. A builder writes into a temporary
sibling, the marker goes in last, and the folder is renamed into place: a killed run leaves the
old folder or none, never half of one; its checkpoints (kept apart) let the next run resume. The
temporary folder's name holds its builder's process id, so the next build removes what a killed
one left (a folder whose process is gone), and never a live build's.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..utils.files import publish_dir
from . import tracking

__all__ = ["build_once", "read_marker"]

logger = logging.getLogger(__name__)


def read_marker(folder: Path, marker: str) -> dict | None:
    """The record in ``folder/marker``, or None when the folder holds no finished build."""
    path = Path(folder) / marker
    return json.loads(path.read_text()) if path.is_file() else None


def build_once(
    out: Path,
    *,
    key: str,
    marker: str,
    build: Callable[[Path | None], dict],
    checkpoint: Path | None = None,
    main_process: bool = True,
) -> dict:
    """Return ``out``'s record if its marker holds ``key``; else build, publish and return it.

    Args:
        out: the folder to build.
        key: identity of everything the build depends on (a config hash).
        marker: the marker's file name inside ``out``.
        build: writes the artefact into the temporary folder it is given and returns the record
            to keep in the marker (``key`` is added). Under several processes it runs in each,
            and only the main one gets a folder (the others get None and write nothing).
        checkpoint: the build's resumable checkpoints, removed once the folder is published.
        main_process: False in the other processes of a multi-process run.
    """
    out = Path(out)
    found = read_marker(out, marker)
    if found is not None and found.get("key") == key:
        logger.info("%s is up to date (key %s): nothing to build", out, key)
        if main_process:
            tracking.record_work(built=False)
        return found
    if not main_process:
        return build(None)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_debris(out)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-pid{os.getpid()}-"))
    try:
        record = {"key": key, **build(tmp)}
        (tmp / marker).write_text(json.dumps(record, indent=2))
        publish_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after a publish; debris after a failure
    if checkpoint is not None:
        shutil.rmtree(checkpoint, ignore_errors=True)
    tracking.record_work(built=True)
    return record


def _remove_debris(out: Path) -> None:
    """Remove the temporary folders of ``out`` that killed builds left: those whose process is gone."""
    for folder in out.parent.glob(f".{out.name}-pid*-*"):
        pid = folder.name[len(out.name) + 5 :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            logger.info("removing %s, left by a killed build (process %s)", folder, pid)
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
