"""`build_once`: a finished folder is reused by its key; a killed build leaves nothing the next one keeps."""

import subprocess
import sys

from cafe_core.workbench.artifacts import build_once, read_marker


def _build(calls):
    def build(folder):
        calls.append(folder)
        (folder / "weights.bin").write_bytes(b"w")
        return {"made": len(calls)}

    return build


def test_a_folder_is_built_once_per_key(tmp_path):
    calls = []
    out = tmp_path / "models" / "g"
    first = build_once(out, key="k1", marker="m.json", build=_build(calls))
    assert first == {"key": "k1", "made": 1} == read_marker(out, "m.json")
    assert build_once(out, key="k1", marker="m.json", build=_build(calls)) == first and len(calls) == 1
    assert build_once(out, key="k2", marker="m.json", build=_build(calls))["made"] == 2
    assert sorted(p.name for p in out.parent.iterdir()) == ["g"]  # no temporary folder stays


def test_the_next_build_removes_what_a_killed_one_left_and_no_live_builds_folder(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)  # a process that has exited
    models = tmp_path / "models"
    killed = models / f".g-pid{dead_pid}-abc123"
    live = models / f".g-pid{subprocess.os.getpid()}-def456"  # this process: a build still running
    other = models / f".h-pid{dead_pid}-ghi789"  # another folder's: not this build's to judge
    for folder in (killed, live, other):
        folder.mkdir(parents=True)
        (folder / "half.bin").write_bytes(b"half")
    build_once(models / "g", key="k", marker="m.json", build=_build([]))
    assert not killed.exists() and live.exists() and other.exists()
    assert (models / "g" / "weights.bin").is_file()
