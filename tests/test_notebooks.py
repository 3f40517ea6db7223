"""The interactive notebooks (blending demo, chat, run comparison) run top to bottom on a tiny
trained project, as papermill runs them: their widgets are built, their grids and charts drawn."""

import json
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a kernel per notebook, on the tiny trained project

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture(scope="module")
def project(assistant_project):
    import yaml

    from helpers import tiny_raw

    _, root, _ = assistant_project
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_raw()))
    (root / "notebooks").mkdir(exist_ok=True)
    for name in ("blending_demo", "chat", "compare_runs"):
        shutil.copy(NOTEBOOKS / f"{name}.ipynb", root / "notebooks")
    return root


def _outputs(path: Path) -> list[dict]:
    return [o for cell in json.loads(path.read_text())["cells"] for o in cell.get("outputs", [])]


def _run(project: Path, name: str, tmp_path: Path, **parameters) -> list[dict]:
    import papermill

    mp = pytest.MonkeyPatch()
    mp.setenv("CAFE_PROJECT_ROOT", str(project))  # the kernel's project (a tiny one has no pyproject.toml)

    out = tmp_path / f"{name}.ipynb"
    try:
        papermill.execute_notebook(
            str(project / "notebooks" / f"{name}.ipynb"),
            str(out),
            parameters=parameters,
            cwd=str(project / "notebooks"),
            kernel_name="python3",
            progress_bar=False,
        )
    finally:
        mp.undo()
    return _outputs(out)


def _widgets(outputs: list[dict]) -> int:
    return sum("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)


def _text(outputs: list[dict]) -> str:
    return "".join("".join(o["text"]) for o in outputs if o.get("output_type") == "stream")


def test_blending_demo_builds_its_widget_and_the_scale_grid(project, tmp_path):
    outputs = _run(project, "blending_demo", tmp_path, grid_clip_scales=[0.0, 3.0], grid_dino_scales=[1.0, 3.0])
    assert _widgets(outputs) >= 1 and "request:" in _text(outputs)
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the s_c x s_d grid


def test_chat_builds_its_widget_and_plays_the_scripted_chat(project, tmp_path):
    outputs = _run(project, "chat", tmp_path, num_images=1, messages=["{request}", "Make it festive!"])
    text = _text(outputs)
    assert _widgets(outputs) >= 1 and text.count("CAFE:") == 2 and "diffusion" in text


def test_compare_runs_reads_the_store_and_prints_the_mlflow_ui_command(project, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow-empty.db'}")
    text = _text(_run(project, "compare_runs", tmp_path))
    assert "0 tables in the store; never run: ablation_embeddings" in text
    assert "mlflow ui --backend-store-uri sqlite:///" in text
