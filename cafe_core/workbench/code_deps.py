"""The code a DVC stage runs: every ``cafe_core`` module its notebook imports, transitively.

``dvc.yaml`` declares each stage's code dependencies as the module files this computes (a package
folder where the stage runs all of it), so editing anything a stage runs makes DVC rerun it, and
editing a module it never imports does not. A test fails when ``dvc.yaml``
disagrees; ``python -m cafe_core.workbench.code_deps --write`` rewrites its code entries.
Imports are read from the source (``ast``), function-level imports included, so the answer is
conservative: it may name a module that a stage imports but never calls.
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import re
import sys
from pathlib import Path

__all__ = [
    "PACKAGE",
    "PLUMBING",
    "code_digest",
    "code_text",
    "direct_imports",
    "import_closure",
    "module_file",
    "notebook_imports",
    "stage_code_deps",
]

PACKAGE = Path(__file__).resolve().parents[1]
"""The ``cafe_core`` package folder."""


def module_file(module: str) -> Path:
    """The source file of a ``cafe_core`` module (a package's ``__init__.py``)."""
    path = PACKAGE.parent.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def direct_imports(source: str, module: str | None = None) -> set[str]:
    """The ``cafe_core`` modules that ``source`` imports anywhere (function-level imports included)."""
    return set(_direct_imports(source, module))


@functools.lru_cache(maxsize=1024)
def _direct_imports(source: str, module: str | None) -> frozenset[str]:
    """Parsing is what costs (a stage's closure is about 80 modules): each source text is parsed once
    per process, keyed by the text itself, so an edited file is parsed again."""
    found = set()
    package = None
    if module is not None:
        package = module if module_file(module).name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == "cafe_core" or name.startswith("cafe_core."):
                while name and not module_file(name).is_file():  # `from pkg import function`: the module
                    name = name.rpartition(".")[0]
                if name:
                    found.add(name)
    return frozenset(found)


def import_closure(modules: set[str], prune: frozenset[str] = frozenset()) -> set[str]:
    """Every ``cafe_core`` module reachable from ``modules`` (their parent packages included),
    never entering a module of ``prune`` (what only it imports is left out too)."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module in seen or module in prune:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b.c runs a and a.b
        todo += sorted(direct_imports(module_file(module).read_text(), module) - seen)
    return seen


PLUMBING = frozenset(
    {
        "cafe_core.workbench",
        "cafe_core.workbench.artifacts",
        "cafe_core.workbench.code_deps",
        "cafe_core.workbench.config",
        "cafe_core.workbench.notebook",
        "cafe_core.workbench.paths",
        "cafe_core.workbench.plots",
        "cafe_core.workbench.processes",
        "cafe_core.workbench.results",
        "cafe_core.workbench.stages",
        "cafe_core.workbench.tracking",
    }
)
"""Modules that decide where files go, what is logged, how ``params.yaml`` is read and which
process runs a job, never what a model learns: :func:`code_digest` leaves their source out. The
values they read are in every skip key already (each key hashes its params), so editing them reruns
a stage (DVC still lists them as code dependencies) without retraining a model that is up to date."""


def code_digest(*modules: str, prune: tuple[str, ...] = ()) -> str:
    """A hash of the code of ``modules`` and everything they import, :data:`PLUMBING` aside: part
    of every skip key.

    A trained folder is reused only when its key matches, so with this in the key a code change
    retrains what it touches, and ``dvc.lock`` never pairs new code with an old model. What is
    hashed is each module's syntax tree without docstrings (:func:`code_text`): editing a comment,
    a docstring or the layout retrains nothing. ``prune`` names modules whose every effect on the
    model the key holds by content (G's key hashes the rows its dataset module hands it), so their
    code, and what only they import, is left out: editing how a dataset is found retrains nothing
    that reads the same rows.
    """
    import hashlib

    digest = hashlib.sha256()
    for module in sorted(import_closure(set(modules), frozenset(prune)) - PLUMBING):
        digest.update(module.encode() + b"\0" + code_text(module_file(module).read_text()).encode() + b"\0")
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=1024)
def code_text(source: str) -> str:
    """What of ``source`` runs: its syntax tree, docstrings left out (comments and layout are not in a
    tree). Cached per source text, as :func:`direct_imports` is."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False)


def notebook_imports(path: Path) -> set[str]:
    """The ``cafe_core`` modules a notebook's code cells import."""
    cells = json.loads(path.read_text())["cells"]
    source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return direct_imports(source)


def code_unit(module: str) -> str:
    """The source file a stage depends on for ``module``, relative to the project root."""
    return module_file(module).relative_to(PACKAGE.parent).as_posix()


def _collapse(files: set[str]) -> set[str]:
    """``files`` with every package folder all of whose sources are among them named as the folder.

    Exact either way; it keeps ``dvc.yaml`` short where a stage runs a whole package (the renderer).
    """
    out = set(files)
    folders = sorted({p.parent for p in PACKAGE.rglob("*.py")}, key=lambda p: len(p.parts), reverse=True)
    for folder in folders:  # deepest first, so a collapsed subpackage can complete its parent
        if folder == PACKAGE:
            continue
        rel = folder.relative_to(PACKAGE.parent).as_posix()
        members = {f.relative_to(PACKAGE.parent).as_posix() for f in folder.glob("*.py")}
        members |= {d.relative_to(PACKAGE.parent).as_posix() for d in folder.iterdir() if (d / "__init__.py").is_file()}
        if members <= out:
            out = (out - members) | {rel}
    return out


def stage_command(cmd: str, root: Path) -> tuple[str, Path]:
    """The runner module and notebook of a stage command ``python -m cafe_core.<runner> NOTEBOOK ...``."""
    match = re.match(r"python -m (cafe_core[\w.]*) (\w+)", cmd)
    if not match:
        raise ValueError(f"a stage command must run a notebook through a cafe_core module, got {cmd!r}")
    return match.group(1), root / "notebooks" / f"{match.group(2)}.ipynb"


def stage_code_deps(cmd: str, root: Path) -> list[str]:
    """The sorted code dependencies of a stage command."""
    runner, notebook = stage_command(cmd, root)
    return sorted(_collapse({code_unit(m) for m in import_closure(notebook_imports(notebook) | {runner})}))


def _rewrite(text: str, root: Path) -> str:
    """``dvc.yaml``'s text with each stage's ``cafe_core`` entries replaced by what it imports."""
    import yaml

    stages = yaml.safe_load(text)["stages"]
    lines, out, stage, i = text.split("\n"), [], None, 0
    while i < len(lines):
        line = lines[i]
        found = re.match(r"^  (\w+):", line)
        stage = found.group(1) if found else stage
        out.append(line)
        deps = re.match(r"^(\s+)deps:\s*$", line)
        i += 1
        if deps and stage in stages:
            indent = deps.group(1) + "  "
            items = []
            while i < len(lines) and lines[i].startswith(indent + "- "):
                items.append(lines[i])
                i += 1
            body = stages[stage].get("do", stages[stage])
            code = [f"{indent}- {d}" for d in stage_code_deps(body["cmd"], root)]
            notebooks = [x for x in items if "notebooks/" in x]
            others = [x for x in items if "notebooks/" not in x and "cafe_core" not in x]
            out += notebooks + code + others
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite dvc.yaml's code dependencies in place")
    parser.add_argument("--root", type=Path, default=PACKAGE.parent)
    args = parser.parse_args(argv)
    path = args.root / "dvc.yaml"
    text = path.read_text()
    new = _rewrite(text, args.root)
    if new == text:
        print("dvc.yaml's code dependencies are what the stages import")
        return 0
    if args.write:
        path.write_text(new)
        print(f"rewrote the code dependencies in {path}")
        return 0
    print("dvc.yaml's code dependencies differ from what the stages import: run with --write", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
