"""Run a parameterized notebook with papermill: ``python -m cafe_core.workbench.notebook NAME [-p key value ...]``.

DVC stages call this, so each stage is a notebook a researcher can also open in JupyterLab.
The executed copy, with its outputs, lands in the git-ignored `runs/` folder.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .config import project_root
from .paths import ProjectPaths

logger = logging.getLogger(__name__)


def run_notebook(
    name: str, parameters: dict | None = None, *, root: Path | None = None, kernel: str = "python3"
) -> Path:
    import papermill

    root = Path(root or project_root())
    paths = ProjectPaths(root)
    source = paths.notebooks / f"{name}.ipynb"
    if not source.is_file():
        known = sorted(p.stem for p in paths.notebooks.glob("*.ipynb"))
        raise FileNotFoundError(f"no notebook {source}; known notebooks: {', '.join(known)}")
    target = paths.runs / f"{name}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.environ["CAFE_PROJECT_ROOT"] = str(root)  # the kernel inherits it: same paths, same MLflow store
    papermill.execute_notebook(
        str(source),
        str(target),
        parameters=parameters or {},
        cwd=str(root),
        kernel_name=kernel,
        progress_bar=False,
        log_output=True,
    )
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", help="notebook name in notebooks/, without .ipynb")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import yaml

    params = {k: yaml.safe_load(v) for k, v in args.parameter}
    out = run_notebook(args.name, params)
    logger.info("executed notebook written to %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
