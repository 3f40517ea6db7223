"""The house style holds: ruff's formatter and linter are clean, and section banners have one form."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUFF = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_is_clean(command):
    assert RUFF is not None, "ruff is not installed: run the tests through bin/with-env"
    done = subprocess.run([RUFF, *command, "."], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]


def test_one_banner_style():
    banner = re.compile(r"^\s*# -{2,}")
    good = re.compile(r"^\s*# --- \S.* -{3,}$")
    odd = [
        f"{path.relative_to(ROOT)}:{i}"
        for path in sorted([*ROOT.glob("cafe_core/**/*.py"), *ROOT.glob("tests/*.py"), *ROOT.glob("scripts/**/*.py")])
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if banner.match(line) and not good.match(line)
    ]
    assert not odd, f"banners not in the form '# --- title ---': {odd}"
