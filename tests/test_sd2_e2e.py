"""`dvc repro` of a tiny copy of the project under `profile: sd2` (issue 13, item 2).

The checkpoints are random and tiny, in the real layouts (`cafe_core.testing.checkpoints`); training
data are DreamBench photos in the project's dataset format; evaluation is DreamBench for objects and a
folder of random "people" for the faces protocol. The numbers mean
nothing: what is checked is that every stage of the one `dvc.yaml` runs on the real code path, that
what needs the world's ground truth says so instead of failing, and that a second run is a no-op.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.sd2_e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
BIN = str(Path(sys.executable).parent)


def dvc(args: list[str], project: Path, dreambench: Path) -> subprocess.CompletedProcess:
    from cafe_core.testing.project import sd2_environment

    env = {**os.environ, **sd2_environment(project, dreambench)}
    env["PATH"] = os.pathsep.join([BIN, env.get("PATH", "")])
    env.pop("MLFLOW_TRACKING_URI", None)  # the project's own store
    return subprocess.run(
        [shutil.which("dvc", path=env["PATH"]), *args], cwd=project, env=env, capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def sd2_project(tmp_path_factory, dreambench):
    """The tiny sd2 project after one full `dvc repro`."""
    from cafe_core.benchmarks.dreambench import load_dreambench
    from cafe_core.testing.project import write_tiny_sd2_project

    root = write_tiny_sd2_project(
        tmp_path_factory.mktemp("sd2") / "project", source=ROOT, dreambench=load_dreambench(dreambench)
    )
    done = dvc(["repro"], root, dreambench)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-6000:]
    return root, dreambench


def test_every_stage_runs_under_sd2(sd2_project):
    root, _ = sd2_project
    stages = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    defined = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    expected = set()
    for name, stage in defined.items():
        if "foreach" in stage:
            table = yaml.safe_load((root / "params.yaml").read_text())[stage["foreach"].strip("${}")]
            expected |= {f"{name}@{key}" for key in table}
        else:
            expected.add(name)
    assert set(stages) == expected


def test_the_stages_read_the_profiles_checkpoints(sd2_project):
    from cafe_core.workbench.config import PROFILES, ROLES

    root, _ = sd2_project
    for role in ROLES:
        pin = json.loads((root / "models/world" / role / "checkpoint.json").read_text())
        assert pin["name"] == PROFILES["sd2"].checkpoint(role) and pin["files"]
    assert (root / "models/generator/main/seed-0/vae/config.json").is_file()  # G draws in the SD2 VAE's latents


def test_tables_judge_the_papers_face_claims_and_the_empty_ceiling_rows_say_so(sd2_project):
    root, _ = sd2_project
    for target in ("ablation_embeddings", "ablation_encoders", "ablation_loss", "ablation_selfdistill"):
        table = (root / "results" / target / "table.md").read_text()
        assert "| both | object |" in table and "| both | face |" in table
        verdicts = json.loads((root / "results" / target / "verdicts.json").read_text())
        assert verdicts and all(v["verdict"] != "not_measured" and v["subjects"] == 1 for v in verdicts)
    scores = json.loads((root / "results/variants/both/subjects.json").read_text())
    assert {r["subject"] for r in scores if r["domain"] == "face"} == {"person-0"}  # evaluation.face_subjects: 1
    assert all(r.get("ID") is not None for r in scores if r["domain"] == "face")
    assert not json.loads((root / "results/variants/real_images/subjects.json").read_text())  # no true images
    report = (root / "results/report.md").read_text()
    assert "ablation_embeddings" in report
    assert json.loads((root / "results/fidelity/probe.json").read_text()) == {}  # no world, no probe


def test_a_second_repro_is_a_no_op(sd2_project):
    root, dreambench = sd2_project
    again = dvc(["repro"], root, dreambench)
    assert again.returncode == 0 and "Running stage" not in again.stdout, again.stdout[-3000:]


def test_new_training_rows_make_teacher_data_stale(sd2_project):
    """The user's training folder is a dependency: adding rows reruns the data stage and what follows."""
    from cafe_core.testing.project import TRAINING_DATASET

    root, dreambench = sd2_project
    extra = root / TRAINING_DATASET / "quadruplets" / "added-later.txt"
    extra.write_text("a new shard would land here\n")
    try:
        status = dvc(["status", "teacher_data"], root, dreambench)
        assert status.returncode == 0 and re.search(rf"modified:\s+{TRAINING_DATASET}\n", status.stdout), status.stdout
    finally:
        extra.unlink()
    assert "up to date" in dvc(["status", "teacher_data"], root, dreambench).stdout
