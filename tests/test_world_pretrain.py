"""World pretraining end to end, at tiny sizes: the same code `dvc repro pretrain_world` runs."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from cafe_core.workbench.config import params_from_dict
from cafe_core.workbench.stages.pretrain_world import pretrain_models
from cafe_core.world.pretrain import MARKER, MODELS
from cafe_core.world.probes import world_metrics

from helpers import tiny_raw

pytestmark = pytest.mark.slow  # end-to-end stages at tiny sizes

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pretrained(tiny_world):
    params, root = tiny_world
    markers = {name: json.loads((root / "models" / "world" / name / MARKER).read_text()) for name in MODELS}
    return params, root, markers


def test_every_world_model_is_saved_in_its_real_layout(pretrained):
    params, root, markers = pretrained
    models = root / "models" / "world"
    assert set(markers) == set(MODELS)
    for name in ("clip", "clip_eval", "dino", "dino_eval", "face_id", "lm"):
        assert (models / name / "config.json").is_file()
        assert (models / name / "model.safetensors").is_file()
        assert (models / name / MARKER).is_file()
    for part in (
        "unet/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
        "text_encoder/model.safetensors",
        "tokenizer/tokenizer.json",
    ):
        assert (models / "t2i" / part).is_file(), part
    assert (
        json.loads((models / "lm" / "tokenizer_config.json").read_text()).get("chat_template")
        or (models / "lm" / "chat_template.jinja").is_file()
    )
    assert not list(models.glob("*.bin")) and not list(models.glob("*/*.bin"))
    assert not list((models / ".checkpoints").glob("*")), "finished models leave no checkpoints behind"


def test_second_run_skips_finished_models(pretrained):
    params, root, markers = pretrained
    again = pretrain_models(params, root)
    assert {k: v["key"] for k, v in again.items()} == {k: v["key"] for k, v in markers.items()}
    assert all(v["seconds"] is None for v in again.values())  # nothing was trained again


def test_changed_model_params_retrain_only_that_model_and_dependents(pretrained, tmp_path):
    params, root, markers = pretrained
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    raw = tiny_raw()
    raw["pretrain"]["clip"]["lr"] = 5e-4  # t2i is conditioned on clip's text encoder: it must follow
    again = pretrain_models(params_from_dict(raw), copy)
    changed = {name for name in MODELS if again[name]["key"] != markers[name]["key"]}
    assert changed == {"clip", "t2i"}


def test_learnedness_probes_report_value_and_chance(pretrained):
    params, root, _ = pretrained
    metrics, samples = world_metrics(params, root / "models" / "world", root / "data" / "world")
    for name, m in metrics.items():
        assert set(m) >= {"value", "chance"}, name
        assert np.isfinite(m["value"]) and 0 < m["chance"], name
    assert metrics["face_id_verification_accuracy"]["chance"] == 0.5
    assert metrics["lm_perplexity"]["chance"] > 100  # uniform over the vocabulary
    assert samples["generated"].shape == (10, 16, 16, 3) and samples["generated"].dtype == np.uint8


def test_killed_pretraining_resumes_from_its_checkpoint(tmp_path):
    """SIGKILL mid-training, run again: it resumes at the last checkpoint and ends with the same weights."""
    raw = tiny_raw(steps=40)
    raw["pretrain"]["checkpoint_every"] = 5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    script = (
        "import sys, logging; logging.basicConfig(level=logging.INFO);"
        "from cafe_core.workbench.config import load_params;"
        "from cafe_core.workbench.stages.pretrain_world import pretrain_models;"
        "pretrain_models(load_params(sys.argv[1]), sys.argv[2], only=('face_id',))"
    )

    def launch(root):
        return subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path / "params.yaml"), str(root)], stderr=subprocess.PIPE, text=True
        )

    killed = tmp_path / "killed"
    proc = launch(killed)
    deadline = time.time() + 120
    while time.time() < deadline:
        states = list((killed / "models" / "world" / ".checkpoints").glob("face_id-*/train_state.json"))
        if states and json.loads(states[0].read_text())["step"] >= 10:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "models" / "world" / "face_id").exists(), "killed before the model was published"
    resumed = launch(killed)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resumed" in err
    clean = launch(tmp_path / "clean")
    clean.communicate(timeout=300)
    from safetensors.numpy import load_file

    a = load_file(killed / "models" / "world" / "face_id" / "model.safetensors")
    b = load_file(tmp_path / "clean" / "models" / "world" / "face_id" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
