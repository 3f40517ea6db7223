"""The trial scripts (scripts/trial_*.py) refuse bad overrides before they train anything: a trial
costs half an hour, so a typo in a key must be a usage error naming the keys, not a TypeError
after the scratch root is made."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRIALS = [
    # script, the params.yaml section its overrides replace, arguments that get past its other checks
    ("trial_generator.py", "generator", ["--scales", "3,3"]),
    ("trial_world_t2i.py", "pretrain.t2i", []),
]


def run_trial(script: str, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    scratch = tmp_path / "scratch"
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args, "--scratch", str(scratch)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


@pytest.mark.parametrize("script, section, extra", TRIALS)
def test_an_unknown_key_is_a_usage_error_naming_the_known_ones(script, section, extra, tmp_path):
    result = run_trial(script, '{"lerning_rate": 1e-3}', *extra, tmp_path=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"unknown {section} key 'lerning_rate'" in result.stderr
    assert "steps" in result.stderr.splitlines()[-1]  # the known keys are listed
    assert not (tmp_path / "scratch").exists()  # nothing was made


@pytest.mark.parametrize("text", ["{lr: 1e-3}", "[1, 2]"])
def test_overrides_that_are_not_a_json_object_are_a_usage_error(text, tmp_path):
    result = run_trial("trial_world_t2i.py", text, tmp_path=tmp_path)  # both parse with scratch.parse_overrides
    assert result.returncode == 2, result.stderr[-2000:]
    assert "overrides must be a JSON object" in result.stderr


def test_a_t2i_that_is_no_model_folder_is_a_usage_error(tmp_path):
    result = run_trial("trial_generator.py", "{}", "--scales", "3,3", "--t2i", str(tmp_path), tmp_path=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "is not a world t2i folder" in result.stderr
    assert not (tmp_path / "scratch").exists()


def test_a_generator_trial_on_another_base_model_links_all_but_that_model(tmp_path, monkeypatch):
    """G starts from the trial's t2i; the other world models are the project's, and the references
    (the base model's images of the prompts) are the trial's own, never the project's cache."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    from trial_generator import scratch_root

    project, t2i = tmp_path / "project", tmp_path / "trial-t2i"
    for rel in ("models/world/clip", "models/world/t2i", "data/world", "data/references", "data/features"):
        (project / rel).mkdir(parents=True)
    (project / "params.yaml").write_text("profile: mini\n")
    (t2i / "unet").mkdir(parents=True)
    root = scratch_root(project, tmp_path / "scratch", t2i)
    world = root / "models/world"
    assert world.is_dir() and not world.is_symlink()
    assert (world / "clip").resolve() == project / "models/world/clip"
    assert (world / "t2i").resolve() == t2i
    assert (root / "data/features").resolve() == project / "data/features"
    assert not (root / "data/references").exists()
    assert (root / "params.yaml").read_text() == "profile: mini\n"
    assert scratch_root(project, tmp_path / "scratch", t2i) == root  # a resumed trial links nothing twice
