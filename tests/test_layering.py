"""The package's one rule, and the layers around it: the method's models import neither the world nor
the workbench, so they run on any data with any plumbing (and both profiles build the same classes)."""

import ast

import pytest

from cafe_core.workbench.code_deps import PACKAGE, import_closure

MODULES = sorted(
    ".".join(("cafe_core", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
    for path in PACKAGE.rglob("*.py")
)

# Layer -> the cafe_core packages its modules may reach, directly or through anything they import.
ALLOWED = {
    "cafe_core.utils": {"cafe_core.utils"},
    "cafe_core.models": {"cafe_core.models", "cafe_core.utils"},
    "cafe_core.data": {"cafe_core.data", "cafe_core.models", "cafe_core.utils"},
    "cafe_core.benchmarks": {"cafe_core.benchmarks", "cafe_core.data", "cafe_core.models", "cafe_core.utils"},
}


def _layer(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _reached(module: str) -> set[str]:
    return {_layer(m) for m in import_closure({module}) if m != "cafe_core"}


@pytest.mark.parametrize("module", [m for m in MODULES if _layer(m) in ALLOWED])
def test_lower_layers_import_only_what_is_below_them(module):
    outside = _reached(module) - ALLOWED[_layer(module)]
    assert not outside, (
        f"{module} reaches {sorted(outside)}; its layer may reach only {sorted(ALLOWED[_layer(module)])}"
    )


def test_the_pipeline_knows_no_world():
    assert "cafe_core.world" not in _reached("cafe_core.pipeline")


def test_every_module_lives_in_a_known_layer():
    """A new top-level module would sit outside every rule above: it must join a layer instead."""
    top = {"cafe_core", "cafe_core.pipeline", "cafe_core.cli"}
    layers = {
        "cafe_core.testing",
        "cafe_core.utils",
        "cafe_core.models",
        "cafe_core.data",
        "cafe_core.benchmarks",
        "cafe_core.world",
        "cafe_core.workbench",
    }
    stray = [m for m in MODULES if m not in top and _layer(m) not in layers]
    assert not stray, f"modules outside the layers: {stray}"


def test_no_code_branches_on_a_profiles_name():
    """Configuration and data decide: no module compares anything with a profile's name."""
    from cafe_core.workbench.config import PROFILES

    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                constants = [c.value for c in [node.left, *node.comparators] if isinstance(c, ast.Constant)]
                if set(constants) & set(PROFILES):
                    offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not offenders, offenders
