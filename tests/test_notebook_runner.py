"""A stage's notebook runner stopped by a signal (`kill`, `timeout`, a scheduler preempting the job)
leaves what Ctrl-C leaves: its MLflow run KILLED with the executed copy attached, and no kernel."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.slow  # starts a kernel per case

ROOT = Path(__file__).resolve().parents[1]


def sleeping_project(root: Path) -> Path:
    """A project whose one notebook writes its kernel's pid, then sleeps."""
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    (root / "pyproject.toml").touch()
    parameters = nbformat.v4.new_code_cell("seconds = 120")
    parameters.metadata["tags"] = ["parameters"]
    work = nbformat.v4.new_code_cell(
        "import os, time\nopen('kernel.pid', 'w').write(str(os.getpid()))\ntime.sleep(seconds)"
    )
    notebook = nbformat.v4.new_notebook(cells=[parameters, work])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, root / "notebooks" / "sleep.ipynb")
    return root


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (an exited process not yet reaped by its new parent does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z")


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_stage_closes_its_run_killed_with_the_notebook_and_leaves_no_kernel(signum, tmp_path):
    root = sleeping_project(tmp_path / "project")
    runner = subprocess.Popen(
        [sys.executable, "-m", "cafe_core.workbench.notebook", "sleep"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # a background job inherits SIGINT ignored; a terminal's Ctrl-C reaches a foreground one
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler),
    )
    try:
        assert wait_for(lambda: (root / "kernel.pid").is_file() or runner.poll() is not None, 60)
        assert runner.poll() is None, runner.stdout.read()
        kernel = int((root / "kernel.pid").read_text())
        runner.send_signal(signum)
        output, _ = runner.communicate(timeout=60)
    finally:
        runner.kill()
    assert runner.returncode != 0, output[-2000:]
    assert wait_for(lambda: not alive(kernel), 10), "the kernel outlived its runner"

    import mlflow

    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])  # this test's store, whatever another set
    (stage,) = [
        r
        for r in client.search_runs([e.experiment_id for e in client.search_experiments()])
        if r.data.tags.get("cafe.role") == "stage"
    ]
    assert stage.info.status == "KILLED", output[-2000:]
    assert stage.data.metrics["stage_seconds"] > 0
    assert "notebook/sleep.ipynb" in {a.path for a in client.list_artifacts(stage.info.run_id, "notebook")}
