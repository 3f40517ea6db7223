"""Run a parameterized notebook with papermill: ``python -m cafe_core.workbench.notebook NAME [-p key value ...]``.

DVC stages call this, so each stage is a notebook a researcher can also open in JupyterLab.
The executed copy, with its outputs, lands in the git-ignored ``runs/<stage>/<item>.ipynb`` and is
attached to the stage's MLflow run.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from .config import project_root
from .paths import ProjectPaths

logger = logging.getLogger(__name__)


def stage_name(name: str, parameters: dict | None = None) -> str:
    """The DVC stage item being run (``DVC_STAGE``, e.g. ``evaluate@both``), else ``name@<values>``."""
    if os.environ.get("DVC_STAGE"):
        return os.environ["DVC_STAGE"]
    values = [str(v) for v in (parameters or {}).values()]
    return f"{name}@{'-'.join(values)}" if values else name


def executed_path(paths: ProjectPaths, stage: str) -> Path:
    """``runs/<stage>/<item>.ipynb`` for a foreach item, ``runs/<stage>.ipynb`` otherwise."""
    stage, _, item = stage.partition("@")
    return paths.runs / stage / f"{item}.ipynb" if item else paths.runs / f"{stage}.ipynb"


def run_notebook(
    name: str, parameters: dict | None = None, *, root: Path | None = None, kernel: str = "python3"
) -> Path:
    """Execute ``notebooks/<name>.ipynb`` inside the stage's MLflow run, then attach the executed copy.

    The kernel logs into the run this opens (``tracking.RUN_ENV``); a failed or interrupted
    notebook leaves the run FAILED or KILLED, with the executed copy up to the failing cell.
    """
    import papermill

    from . import tracking
    from .config import load_params

    root = Path(root or project_root())
    paths = ProjectPaths(root)
    source = paths.notebooks / f"{name}.ipynb"
    if not source.is_file():
        known = sorted(p.stem for p in paths.notebooks.glob("*.ipynb"))
        raise FileNotFoundError(f"no notebook {source}; known notebooks: {', '.join(known)}")
    parameters = dict(parameters or {})
    stage = stage_name(name, parameters)
    target = executed_path(paths, stage)
    target.parent.mkdir(parents=True, exist_ok=True)
    params = load_params(root / parameters.get("params_file", "params.yaml"), profile=parameters.get("profile"))
    run_id = tracking.open_stage_run(stage, params, root, source=str(source.relative_to(root)))
    started = time.perf_counter()
    status = "FAILED"
    try:
        with _environment({"CAFE_PROJECT_ROOT": str(root), tracking.RUN_ENV: run_id}):  # the kernel inherits them
            papermill.execute_notebook(
                str(source),
                str(target),
                parameters=parameters,
                cwd=str(root),
                kernel_name=kernel,
                progress_bar=False,
                log_output=True,
            )
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:  # this attempt's wall time, and the executed copy up to where it stopped
        tracking.close_stage_run(run_id, status, root, seconds=time.perf_counter() - started, notebook=target)
    return target


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block, then restore what was there."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def stop_on_sigterm() -> None:
    """Take SIGTERM (``kill``, ``timeout``, a scheduler preempting the job) as Ctrl-C.

    By default SIGTERM ends the process at once: the stage's MLflow run stays RUNNING until a later
    run's sweep marks it dead, and the executed copy is not attached. As a KeyboardInterrupt, the run
    closes KILLED with its wall time and the executed copy up to where it stopped. The kernel goes
    either way: ipykernel exits when its parent does.
    """

    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupt)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", help="notebook name in notebooks/, without .ipynb")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import yaml

    params = {k: yaml.safe_load(v) for k, v in args.parameter}
    stop_on_sigterm()
    out = run_notebook(args.name, params)
    logger.info("executed notebook written to %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
