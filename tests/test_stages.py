"""The generation stages end to end at tiny sizes: teacher data -> G -> evaluation -> ablation table."""

import csv
import json

import mlflow
import numpy as np
import pytest

from cafe_core import stages
from cafe_core.diffusion import CafeGenerator


@pytest.fixture(scope="module")
def trained(tiny_world):
    params, root = tiny_world
    report = stages.teacher_data(params, root)
    stats = stages.train_generator_stage(params, root, "main")
    return params, root, report, stats


def test_teacher_filter_report(trained):
    _, root, report, _ = trained
    saved = json.loads((root / "results/teacher/filter.json").read_text())
    assert saved["kept"] == report["kept"] and 0 < report["kept"] <= report["quadruplets"]
    assert set(saved["rejected_by_failure_mode"]) <= {"none", "identity_drift", "ignored_instruction", "artefacts"}
    assert saved["calibrated"] is False and saved["thresholds"] == {"clip_threshold": -1.0, "dino_threshold": -1.0}
    assert report["kept"] == report["quadruplets"]


def test_generator_is_saved_and_loads(trained):
    _, root, _, stats = trained
    assert stats["loss"] > 0
    gen = CafeGenerator.from_pretrained(stages.generator_dir(root, "main"))
    assert gen.config.attention == "joint"
    assert not (root / "models/generator/.checkpoints").exists() or not any((root / "models/generator/.checkpoints").iterdir())


def test_variants_and_table(trained):
    params, root, _, _ = trained
    for variant in ("both", "clip_only", "dino_only", "real_images"):
        result = stages.evaluate_variant(params, root, variant)
        domains = {r["domain"]: r for r in result["rows"]}
        assert domains["object"]["ID"] is None and domains["face"]["DINO"] is None
        assert all(isinstance(domains["object"][k], float) for k in ("DINO", "CLIP-I", "CLIP-T"))
        assert isinstance(domains["face"]["ID"], float)
    real = json.loads((root / "results/variants/real_images/metrics.json").read_text())["rows"]
    assert real[0]["variant"] == "real_images" and -1 <= real[0]["DINO"] <= 1
    rows = stages.ablation_table(params, root, "ablation_embeddings")
    with open(root / "results/ablation_embeddings/table.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["variant"] for r in table] == [r.variant for r in rows]
    assert {r["variant"] for r in table} == {"clip_only", "dino_only", "both", "real_images"}
    assert list(table[0]) == ["variant", "domain", "DINO", "CLIP-I", "CLIP-T", "ID"]
    mlflow.set_tracking_uri(stages.tracking.tracking_uri(root))
    runs = mlflow.search_runs(experiment_names=["ablation_embeddings"], output_format="list")
    assert sorted(r.info.run_name for r in runs) == ["both", "clip_only", "dino_only", "real_images"]
    stages.ablation_table(params, root, "ablation_embeddings")  # unchanged results: no duplicate runs
    assert len(mlflow.search_runs(experiment_names=["ablation_embeddings"], output_format="list")) == 4


def test_unknown_names_fail_clearly(tiny_world):
    params, root = tiny_world
    with pytest.raises(KeyError, match="unknown generator 'huge'.*main"):
        stages.train_generator_stage(params, root, "huge")
    with pytest.raises(KeyError, match="unknown variant 'nope'.*real_images"):
        stages.evaluate_variant(params, root, "nope")


def test_dreambench_protocol_runs_on_the_real_photos(trained, dreambench):
    from cafe_core.dreambench import load_dreambench

    params, root, _, _ = trained
    row = stages.dreambench_protocol(params, root, "main", subjects=2, prompts=2, images_per_prompt=1, bench=load_dreambench(dreambench))
    assert row.domain == "dreambench"
    assert all(-1.0 <= v <= 1.0 for v in (row.DINO, row.CLIP_I, row.CLIP_T))


def test_fast_path_takes_reference_images(trained):
    params, root, _, _ = trained
    from cafe_core.world import World

    draw = stages.ReferenceGenerator.load(params, root, "main")
    world = stages.make_world(params)
    subject = world.subjects("object", "eval")[0]
    photo = world.render(subject, None, seed=3).image
    reference = world.render(world.subjects("object", "eval")[5], world.contexts("object")[2], seed=4).image
    out = draw.from_images(photo, reference[None], seed=0)
    again = draw.from_images(photo, reference[None], seed=0)
    assert out.shape == (1, 16, 16, 3)
    np.testing.assert_array_equal(out, again)
    assert isinstance(world, World)


def test_reference_images_are_cached_per_prompt(trained, monkeypatch):
    params, root, _, _ = trained
    draw = stages.ReferenceGenerator.load(params, root, "main")
    first = draw.references(["a ball on the beach", "a man in the snow"], seed=3)
    calls = []
    monkeypatch.setattr(draw, "t2i", lambda prompts, **kw: calls.append(prompts) or np.zeros((len(prompts), 16, 16, 3), np.uint8))
    again = draw.references(["a man in the snow", "a ball on the beach"], seed=3)
    np.testing.assert_array_equal(first[::-1], again)
    assert calls == []  # nothing redrawn
    draw.cache.save()
    reloaded = stages.ReferenceGenerator.load(params, root, "main")
    assert len(reloaded.cache) >= 2
