"""Offline resolution of model names to local folders.

Nothing here downloads, ever: the real checkpoints of the ``sd2`` profile must
already sit on disk, and a missing one fails with one message that names it,
lists every place looked, and says how to supply it.

Resolution order for ``resolve_model(name)``:

1. an explicit path (absolute, or starting with ``.`` or ``~``): there, and nowhere else;
2. ``<model_root>/<name>`` for the ``model_root`` argument, else for every root
   in the ``CAFE_MODEL_ROOT`` environment variable (``os.pathsep``-separated);
3. ``name`` relative to the working directory, when it has a path separator (a bare
   ``clip`` is a model's name, never whatever folder of that name the user stands beside);
4. the Hugging Face hub cache (``HF_HUB_CACHE`` / ``HF_HOME``, read at call
   time), through ``huggingface_hub.snapshot_download(..., local_files_only=True)``.
"""

from __future__ import annotations

import logging
import os
import pathlib

from huggingface_hub import snapshot_download
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

__all__ = ["ENV_MODEL_ROOT", "ModelNotFoundError", "hf_hub_cache_dir", "resolve_model"]

logger = logging.getLogger(__name__)

ENV_MODEL_ROOT = "CAFE_MODEL_ROOT"


class ModelNotFoundError(FileNotFoundError):
    """A model is on none of the local places we look, and we never download.

    Attributes:
        name: the model name or path that was asked for.
        looked: one ``"<place>: <path> (<why not>)"`` line per place searched.
    """

    def __init__(self, name: str, looked: list[str], subfolder: str | None = None, is_repo_id: bool = True) -> None:
        self.name = name
        self.looked = list(looked)
        self.subfolder = subfolder
        self.is_repo_id = is_repo_id
        super().__init__(self._message())

    def __reduce__(self) -> tuple:  # picklable across processes (papermill, DVC, dataloader workers)
        return type(self), (self.name, self.looked, self.subfolder, self.is_repo_id)

    def _message(self) -> str:
        what = f"{self.name!r}" + (f" (subfolder {self.subfolder!r})" if self.subfolder else "")
        places = "\n".join(f"  - {line}" for line in self.looked)
        header = f"Model {what} was not found locally, and CAFE never downloads weights. Looked in:\n{places}\n"
        if not self.is_repo_id:
            return header + "Check the path, or pass a Hub repo id such as 'facebook/dinov2-giant'."
        return header + (
            "To supply it, on a machine with network access run\n"
            f"    hf download {self.name} --local-dir <ROOT>/{self.name}\n"
            "(gated models such as Llama 2 need `hf auth login` first), copy the folder here, and then "
            f"either pass that folder as the model path, or set {ENV_MODEL_ROOT}=<ROOT> "
            "(or pass model_root=<ROOT>). Alternatively put it in the Hugging Face cache: "
            f"`hf download {self.name}` with HF_HOME (or HF_HUB_CACHE) pointing at a cache this machine reads."
        )


def hf_hub_cache_dir() -> pathlib.Path:
    """The Hugging Face hub cache folder, from the environment as it is *now*.

    ``huggingface_hub.constants`` freezes the environment at import time; reading
    it here lets notebooks and tests point ``HF_HUB_CACHE``/``HF_HOME`` elsewhere
    after import, with the same precedence huggingface_hub uses.
    """
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return pathlib.Path(os.path.expandvars(explicit)).expanduser()
    xdg_cache = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    hf_home = os.environ.get("HF_HOME", os.path.join(xdg_cache, "huggingface"))
    return pathlib.Path(os.path.expandvars(hf_home)).expanduser() / "hub"


def _model_roots(model_root: str | os.PathLike | None) -> list[tuple[pathlib.Path, str]]:
    """The roots to search, each with where it came from (for the error message)."""
    if model_root is not None:
        return [(pathlib.Path(model_root).expanduser(), "model_root argument")]
    env = os.environ.get(ENV_MODEL_ROOT, "")
    return [(pathlib.Path(p).expanduser(), ENV_MODEL_ROOT) for p in env.split(os.pathsep) if p]


def _with_subfolder(folder: pathlib.Path, subfolder: str | None) -> pathlib.Path:
    return folder / subfolder if subfolder else folder


def resolve_model(
    name_or_path: str | os.PathLike,
    *,
    model_root: str | os.PathLike | None = None,
    subfolder: str | None = None,
) -> pathlib.Path:
    """Return the local folder of a model (and ``subfolder`` in it), never downloading.

    Where it looks: an explicit path (absolute, or starting with ``.`` or ``~``) is used as it is
    and nowhere else; any other name is looked up in the model roots, then as a folder relative to
    the working directory (only a name with a path separator: a bare ``clip`` never is one, so a
    folder of that name wherever the user stands is not taken for the model), then in the Hugging
    Face cache.

    Args:
        name_or_path: a local folder, or a Hub repo id such as ``"facebook/dinov2-giant"``.
        model_root: a folder holding models as ``<model_root>/<org>/<name>``; defaults to
            the roots in ``CAFE_MODEL_ROOT``.
        subfolder: a component inside the model folder, e.g. ``"unet"``. A candidate
            counts only when it holds this subfolder.

    Raises:
        ModelNotFoundError: when no place holds the model.
    """
    name = os.fspath(name_or_path)
    looked: list[str] = []
    local = _with_subfolder(pathlib.Path(name).expanduser(), subfolder)
    if os.path.isabs(name) or name.startswith((".", "~")):  # an explicit path: nothing else is meant
        if local.is_dir():
            logger.debug("Resolved %r to local folder %s", name, local)
            return local.resolve()
        raise ModelNotFoundError(name, [f"local path: {local.resolve()} (no such folder)"], subfolder, is_repo_id=False)

    roots = _model_roots(model_root)
    if not roots:
        looked.append(f"model root: none given (no model_root argument, {ENV_MODEL_ROOT} unset)")
    for root, origin in roots:
        candidate = _with_subfolder(root / name, subfolder)
        if candidate.is_dir():
            logger.debug("Resolved %r under model root %s", name, root)
            return candidate.resolve()
        looked.append(f"model root ({origin}): {candidate} (no such folder)")

    if os.sep in name or "/" in name:
        if local.is_dir():
            logger.debug("Resolved %r to local folder %s", name, local)
            return local.resolve()
        looked.append(f"local path: {local.resolve()} (no such folder)")

    cache_dir = hf_hub_cache_dir()
    is_repo_id = True
    try:
        snapshot = pathlib.Path(snapshot_download(name, cache_dir=cache_dir, local_files_only=True))
    except HFValidationError:
        is_repo_id = False
        looked.append(f"Hugging Face cache: {cache_dir} (skipped: {name!r} is not a valid Hub repo id)")
    except LocalEntryNotFoundError as error:
        reason = "incomplete snapshot" if "incomplete" in str(error).lower() else "no cached snapshot"
        looked.append(f"Hugging Face cache: {cache_dir} ({reason} of {name})")
    else:
        candidate = _with_subfolder(snapshot, subfolder)
        if candidate.is_dir():
            logger.debug("Resolved %r in the Hugging Face cache: %s", name, candidate)
            return candidate
        looked.append(f"Hugging Face cache: {candidate} (snapshot has no subfolder {subfolder!r})")

    raise ModelNotFoundError(name, looked, subfolder, is_repo_id=is_repo_id) from None
