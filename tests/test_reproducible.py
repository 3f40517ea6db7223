"""A stage rerun from scratch on one machine writes the same bytes: what lets `dvc.lock`'s hashes mean
"this code and these params made this output" (timings and other run facts go to metrics and MLflow)."""

import hashlib

import pytest

from cafe_core.workbench.config import params_from_dict
from cafe_core.workbench.stages.pretrain_world import pretrain_models

from helpers import tiny_raw

pytestmark = pytest.mark.slow  # trains tiny world models twice


def _hashes(folder):
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".checkpoints" not in p.parts
    }


def test_world_pretraining_rerun_from_scratch_is_byte_identical(tmp_path):
    params = params_from_dict(tiny_raw())
    models = ("clip", "dino", "lm")
    first = pretrain_models(params, tmp_path / "a", models=models)
    second = pretrain_models(params, tmp_path / "b", models=models)
    assert all(r[m]["seconds"] is not None for r in (first, second) for m in models)  # both trained from scratch
    a, b = _hashes(tmp_path / "a/models/world"), _hashes(tmp_path / "b/models/world")
    assert a and a == b
    assert not any("seconds" in (tmp_path / "a/models/world" / m / "cafe_pretrain.json").read_text() for m in models)
