"""`dvc.lock` describes the code on main: every stage whose code, notebook, command or params changed
since its lock entry was written is listed, with the reason, in `dvc-stale.yaml`, and no other.

Missing outputs (a clone that has not run `dvc pull`) are not staleness: only what the lock claims
about its inputs is checked.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = shutil.which("dvc", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))


def stale_stages(root: Path) -> dict[str, list[str]]:
    """Stage -> what changed in its inputs since its lock entry (outputs and upstream data aside)."""
    out = subprocess.run([DVC, "status", "--json"], cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    found = {}
    for stage, changes in json.loads(out.stdout or "{}").items():
        why = []
        for change in changes if isinstance(changes, list) else [changes]:
            if not isinstance(change, dict):
                why.append(str(change))  # "always changed", "changed command"
                continue
            for path, state in change.get("changed deps", {}).items():
                if isinstance(state, dict):
                    why += [f"{path}: {key} {s}" for key, s in state.items()]  # params
                elif state == "modified" and not path.startswith(("models/", "data/", "results/")):
                    why.append(f"{path} modified")
        if why:
            found[stage.split(":")[-1]] = why
    return found


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the project's git checkout")
def test_every_stale_lock_entry_is_declared():
    declared = yaml.safe_load((ROOT / "dvc-stale.yaml").read_text()) or {}
    stale = stale_stages(ROOT)
    undeclared = {k: v for k, v in stale.items() if k not in declared}
    assert not undeclared, (
        f"dvc.lock is stale for {sorted(undeclared)} ({undeclared}): rerun them (`dvc repro <stage>`) "
        "or list them with the reason in dvc-stale.yaml"
    )
    fresh = sorted(set(declared) - set(stale))
    assert not fresh, f"{fresh} are listed in dvc-stale.yaml but their lock entries are current: remove them"
