"""The environment files agree: requirements.lock resolves requirements.txt and pyproject's
dependencies, environment.yml installs that lock on Python 3.11, and this environment is the lock."""

import re
from importlib import metadata
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _lock() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            match = re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+)==(\S+)", line.strip())
            assert match, f"requirements.lock: not an exact pin: {line!r}"
            pins[canonicalize_name(match.group(1))] = Version(match.group(2))
    return pins


def _requirements(path: Path) -> list[Requirement]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return [Requirement(line) for line in lines if line]


def test_the_lock_resolves_every_declared_requirement():
    import tomllib

    pins = _lock()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _requirements(ROOT / "requirements.txt") + [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        declared += [Requirement(r) for r in extra if not r.startswith(("open_clip", "torchvision"))]
    for req in declared:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is not pinned in requirements.lock: run scripts/lock-requirements"
        assert req.specifier.contains(pins[name], prereleases=True), f"the lock's {name}=={pins[name]} breaks {req}"


def test_environment_yml_installs_the_lock_on_python_3_11():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]  # the `pytorch` channel stops at torch 2.5
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    (pip,) = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert sorted(conda) == ["pip", "python=3.11"]
    assert pip == ["-r requirements.lock", "-e ."]
    import tomllib

    supported = SpecifierSet(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"])
    assert "3.11" in supported and "3.10" not in supported


def test_this_environment_is_the_lock():
    """bin/with-env installs requirements.lock: what runs the tests is what the lock says."""
    pins = _lock()
    for req in _requirements(ROOT / "requirements.txt"):
        installed = Version(metadata.version(req.name))
        assert installed.public == pins[canonicalize_name(req.name)].public, f"{req.name}: {installed} installed"
