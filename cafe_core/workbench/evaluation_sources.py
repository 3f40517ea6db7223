"""The evaluation data ``params.yaml: data.evaluation`` names, built for the stages.

One name for every domain (``world``: CAFE-mini's held-out subjects with their ground truth;
``dreambench``: the real photos and prompts, objects only), or one per domain::

    data:
      evaluation: {object: dreambench, face: faces}   # data.folders.faces: cafe_core.benchmarks.faces
      folders: {faces: data/faces}

Apart from :mod:`.sources` so that training stages never import the benchmarks (nor their skip keys
hash them).
"""

from __future__ import annotations

from pathlib import Path

from ..data.sources import DataSource, DomainSources
from .config import EVAL_DOMAINS, Params, ParamsError
from .paths import ProjectPaths
from .sources import world_source

__all__ = ["evaluation_source"]


def evaluation_source(params: Params, root: Path) -> DataSource:
    """``data.evaluation``'s source; a mapping of domains to names becomes one source per domain."""
    named = params.data.evaluation
    if isinstance(named, str):
        return _source(named, params, root, None)
    unknown = sorted(set(named) - set(EVAL_DOMAINS))
    if not named or unknown:
        raise ParamsError(f"data.evaluation maps domains ({', '.join(EVAL_DOMAINS)}) to sources, got {named!r}")
    built: dict[str, DataSource] = {}
    for domain, name in named.items():
        if name not in built:  # a source named for two domains is built once and serves both
            built[name] = _source(name, params, root, domain)
    if len(built) == 1 and set(next(iter(built.values())).domains) == set(named):
        return next(iter(built.values()))  # one source for all its domains: itself
    try:
        return DomainSources({domain: built[name] for domain, name in named.items()})
    except ValueError as err:
        raise ParamsError(f"data.evaluation: {err}") from None


def _source(name: str, params: Params, root: Path, domain: str | None) -> DataSource:
    """``world``, ``dreambench``, or (for the ``face`` domain) a key of ``data.folders`` naming a faces folder."""
    if name == "world":
        from ..world.fidelity import PROBE_FOLDER

        model_root = ProjectPaths(root).model_root(params.profile)
        return world_source(params, fidelity_probe=model_root / PROBE_FOLDER if model_root is not None else None)
    if name == "dreambench":
        from ..benchmarks.dreambench import DreamBenchSource

        return DreamBenchSource()
    folder = params.data.folder(name)
    if folder is not None and domain == "face":
        from ..benchmarks.faces import FaceFolderSource

        return FaceFolderSource(Path(root) / folder, name=folder)
    raise ParamsError(
        f"data.evaluation must be `world`, `dreambench`, or a mapping such as "
        f"{{object: dreambench, face: faces}} (a key of data.folders naming a faces folder), got {name!r}"
    )
