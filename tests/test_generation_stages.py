"""The generation stages end to end at tiny sizes: teacher data -> G -> evaluation -> ablation table."""

import csv
import json

import mlflow
import numpy as np
import pytest
import torch

from cafe_core.benchmarks.claims import CLAIMS
from cafe_core.data.dataset import open_dataset
from cafe_core.models.generator import CafeGenerator
from cafe_core.workbench import tracking
from cafe_core.workbench.config import DataParams, ParamsError
from cafe_core.workbench.paths import ProjectPaths
from cafe_core.workbench.results import read_scores
from cafe_core.workbench.stages.ablation import ablation_table
from cafe_core.workbench.stages.drawing import PromptReferences, reference_pipeline
from cafe_core.workbench.stages.evaluate import evaluate_variant
from cafe_core.workbench.stages.teacher_data import teacher_data
from cafe_core.workbench.stages.train_assistant import train_assistant_stage
from cafe_core.workbench.stages.train_generator import train_generator_stage
from cafe_core.world import World, make_world

from helpers import spy_side_by_side

pytestmark = pytest.mark.slow  # end-to-end stages at tiny sizes


@pytest.fixture(scope="module")
def trained(assistant_project):
    """The tiny world with teacher data, G (every training seed), its guidance scales and the `mse`
    assistant, which the variants draw c_hat from; a second call of each stage reuses what is built."""
    params, root, _ = assistant_project
    report = teacher_data(params, root)
    stats = train_generator_stage(params, root, "main")
    return params, root, report, stats


def test_teacher_filter_report(trained):
    _, root, report, _ = trained
    saved = json.loads((root / "results/teacher/filter.json").read_text())
    assert saved["kept"] == report["kept"] and 0 < report["kept"] <= report["quadruplets"]
    assert set(saved["rejected_by_failure_mode"]) <= {"none", "identity_drift", "ignored_instruction", "artefacts"}
    assert saved["calibrated"] is False and saved["thresholds"] == {"clip_threshold": -1.0, "dino_threshold": -1.0}
    assert report["kept"] == report["quadruplets"]
    dataset = open_dataset(root / "data/datasets/teacher")  # every quadruplet, its scores and decisions
    assert len(dataset) == report["quadruplets"] and dataset.kept().sum() == report["kept"]
    row = dataset.row(0)
    assert row["teacher"] == "cafe-mini world teacher" and row["clip_pass"] is True and row["response"]
    assert json.loads(row["truth"])["failure"] in {"none", "identity_drift", "ignored_instruction", "artefacts"}
    statistics = json.loads((root / "results/datasets/teacher.json").read_text())
    assert statistics["stages"]["both_pass"] == report["kept"] and statistics["stages"]["with_dialogue"] == len(dataset)


def test_generator_is_saved_and_loads(trained):
    params, root, _, stats = trained
    assert sorted(stats) == params.seeds and all(s["loss"] > 0 for s in stats.values())
    for seed in params.seeds:
        gen = CafeGenerator.from_pretrained(ProjectPaths(root).generator("main", seed))
        assert gen.config.attention == "joint"
    one, two = (ProjectPaths(root).generator("main", s) / "cafe_conditioning.safetensors" for s in params.seeds)
    assert one.read_bytes() != two.read_bytes()  # each training seed starts G's new layers its own way
    assert not (root / "models/generator/.checkpoints").exists() or not any(
        (root / "models/generator/.checkpoints").iterdir()
    )


def test_variants_and_table(trained):
    params, root, _, _ = trained
    for variant in ("both", "clip_only", "dino_only", "real_images"):
        result = evaluate_variant(params, root, variant)
        fidelity = {"attributes", "all_attributes", "context"}  # the probe's verdicts: the world knows the truth
        assert set(result["object"]) >= {"DINO", "CLIP-I", "CLIP-T"} | fidelity | {"attribute.colour"}
        assert set(result["face"]) >= {"CLIP-T", "ID"} | fidelity | {"attribute.eye_colour"}
        assert "DINO" not in result["face"] and "ID" not in result["object"]
        assert all(isinstance(v, float) for scores in result.values() for v in scores.values())
        assert (root / f"results/variants/{variant}/samples/object.png").is_file()
        assert read_scores(root, variant) == result
        # every image in DreamBench++'s layout, per training seed, scored against its one input photo
        for part in ["truth"] if variant == "real_images" else [f"seed-{s}" for s in params.seeds]:
            peer = ProjectPaths(root).variant_peer_samples(variant) / part
            e = params.evaluation
            drawn = (e.object_subjects + e.face_subjects) * e.prompts * e.images_per_prompt
            assert json.loads((peer / "summary.json").read_text())["images"] == drawn
            assert len((peer / "scores.jsonl").read_text().splitlines()) == drawn
    real = json.loads((root / "results/variants/real_images/metrics.json").read_text())
    assert -1 <= real["real_images"]["object"]["DINO"] <= 1 and -1 <= real["real_images"]["face"]["ID"] <= 1
    files = [json.loads((root / f"results/variants/{v}/metrics.json").read_text()) for v in ("both", "clip_only")]
    assert not set(tracking.flatten(files[0])) & set(tracking.flatten(files[1]))  # DVC columns: bare both.object.DINO
    rows = ablation_table(params, root, "ablation_embeddings")
    with open(root / "results/ablation_embeddings/table.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["variant"] for r in table] == [r.variant for r in rows]
    assert {r["variant"] for r in table} == {"clip_only", "dino_only", "both", "real_images"}
    assert list(table[0])[:8] == ["variant", "domain", "DINO", "CLIP-I", "CLIP-T", "ID", "attributes", "context"]
    assert all(0 <= float(r["attributes"]) <= 1 and 0 <= float(r["context"]) <= 1 for r in table)
    assert all(float(r["CLIP-T_ci95"]) >= 0 for r in table)
    assert {r["seeds"] for r in table if r["variant"] != "real_images"} == {str(len(params.seeds))}
    assert {r["seeds"] for r in table if r["variant"] == "real_images"} == {"0"}  # true renders: nothing trained
    verdicts = json.loads((root / "results/ablation_embeddings/verdicts.json").read_text())
    assert [v["claim"] for v in verdicts] == [c.claim for c in CLAIMS["ablation_embeddings"]]
    assert all(v["verdict"] in ("holds", "reversed", "within_noise") and v["domain"] == "face" for v in verdicts)
    assert "| verdict |" in (root / "results/ablation_embeddings/table.md").read_text()
    mlflow.set_tracking_uri(tracking.tracking_uri(root))
    runs = {r.info.run_name: r for r in mlflow.search_runs(experiment_names=["cafe-mini"], output_format="list")}
    table = runs["ablation_embeddings"]
    for variant in ("both", "clip_only", "dino_only", "real_images"):
        evaluation = runs[f"evaluate@{variant}"]  # the stage that evaluates logs the scores
        assert "object/CLIP-T" in evaluation.data.metrics and "face/ID" in evaluation.data.metrics
        assert table.data.tags[f"cafe.source_run.{variant}"] == evaluation.info.run_id  # linked, not copied
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(table.info.run_id)}
    assert {"table.json", "verdicts.json", "table.md", "table.csv"} <= artifacts
    assert not table.data.metrics
    parents = {r.data.tags.get("mlflow.parentRunId") for r in runs.values() if r.data.tags["cafe.role"] == "stage"}
    (parent,) = parents  # one pipeline run holds every stage run of this code state
    assert runs[next(n for n in runs if n.startswith("pipeline"))].info.run_id == parent


def test_unknown_names_fail_clearly(tiny_world):
    params, root = tiny_world
    with pytest.raises(KeyError, match="unknown generator 'huge'.*main"):
        train_generator_stage(params, root, "huge")
    with pytest.raises(KeyError, match="unknown variant 'nope'.*real_images"):
        evaluate_variant(params, root, "nope")
    with pytest.raises(FileNotFoundError, match="dvc repro evaluate@never"):
        read_scores(root, "never")
    old = root / "results/variants/old/metrics.json"  # the flat layout before scores were keyed by variant
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_text(json.dumps({"object": {"DINO": 0.5}}))
    with pytest.raises(ValueError, match="no entry 'old'.*rerun `dvc repro evaluate@old`"):
        read_scores(root, "old")


def test_evaluation_on_the_real_dreambench_photos(trained, dreambench, tmp_path, monkeypatch):
    """`data.evaluation: dreambench`: the same stage scores G on the real photos and prompts."""
    import dataclasses
    import shutil

    params, root, _, _ = trained
    copy = tmp_path / "project"  # results of this evaluation must not replace the world's
    shutil.copytree(root / "models", copy / "models")
    shutil.copytree(root / "data", copy / "data")
    shutil.copytree(root / "results/guidance", copy / "results/guidance")
    monkeypatch.setenv("CAFE_DREAMBENCH", str(dreambench))
    params = dataclasses.replace(params, data=DataParams(train="world", evaluation="dreambench"))
    result = evaluate_variant(params, copy, "both")
    assert set(result) == {"object"}  # DreamBench has objects (and pets), no faces
    assert "attributes" not in result["object"]  # real photos: no ground truth for the fidelity probe
    assert all(-1.0 <= result["object"][k] <= 1.0 for k in ("DINO", "CLIP-I", "CLIP-T"))
    # real photos have no true images: the ceiling row stays empty (and says why in its run), the stage goes on
    assert evaluate_variant(params, copy, "real_images") == {}
    assert not any(ProjectPaths(copy).variant_peer_samples("real_images").iterdir())


def test_each_domain_is_drawn_at_its_own_protocols_sizes(trained, tmp_path):
    """`evaluation.prompts` and `images_per_prompt` per domain (sd2: DreamBench's 25 x 4, the faces'
    23 x 10): every subject of a domain gets its domain's prompts, each drawn that many times."""
    import dataclasses
    import shutil

    from cafe_core.benchmarks.samples import read_samples

    params, root, _, _ = trained
    copy = tmp_path / "project"  # its results must not replace the shared fixture's
    shutil.copytree(root / "models", copy / "models")
    sizes = dataclasses.replace(
        params.evaluation, prompts={"object": 1, "face": 2}, images_per_prompt={"object": 2, "face": 1}
    )
    evaluate_variant(dataclasses.replace(params, evaluation=sizes), copy, "real_images")
    (folder,) = {p.parent for p in ProjectPaths(copy).variant_peer_samples("real_images").rglob("text") if p.is_dir()}
    drawn: dict[str, set] = {}
    for sample in read_samples(folder):
        subject, image = sample.key.split("/")
        drawn.setdefault(subject, set()).add(tuple(map(int, image.split("_"))))
    assert {s.split("-")[0] for s in drawn} == {"object", "face"}
    for subject, images in drawn.items():
        prompts, ks = {p for p, _ in images}, {k for _, k in images}
        expected = (1, 2) if subject.startswith("object-") else (2, 1)
        assert (len(prompts), len(ks), len(images)) == (*expected, expected[0] * expected[1]), subject


def test_g_alone_draws_from_the_base_models_image_of_the_prompt(trained):
    """A variant without an assistant evaluates G by itself (eq. 4's x_ref from the plain prompt)."""
    import dataclasses

    from cafe_core.workbench.config import VariantSpec

    params, root, _, _ = trained
    alone = dataclasses.replace(params, variants={**params.variants, "g_alone": VariantSpec("main", "both")})
    result = evaluate_variant(alone, root, "g_alone")
    assert set(result) == {"object", "face"} and "attributes" in result["face"]
    rows = json.loads((root / "results/variants/g_alone/subjects.json").read_text())
    assert sorted({r["seed"] for r in rows}) == params.seeds
    assert json.loads((root / "results/variants/g_alone/quality.json").read_text()) == {"g_alone": {}}


def test_a_killed_evaluation_resumes_at_the_seed_it_was_scoring(trained, monkeypatch):
    """A finished training seed's scores are kept: a rerun after a kill draws only what is left."""
    from cafe_core.workbench.stages import evaluate

    params, root, _, _ = trained
    first = evaluate_variant(params, root, "clip_only")
    samples = ProjectPaths(root).variant_samples("clip_only")
    grids = {png.name: png.read_bytes() for png in samples.glob("*.png")}
    assert sorted(grids) == ["face.png", "object.png"]
    for png in samples.glob("*.png"):
        png.unlink()
    peer = ProjectPaths(root).variant_peer_samples("clip_only") / f"seed-{params.seeds[0]}/scores.jsonl"
    scores = peer.read_text()

    def no_drawing(*args, **kwargs):
        raise AssertionError("a scored training seed was drawn again")

    monkeypatch.setattr(evaluate._Drawer, "for_variant", no_drawing)
    assert evaluate_variant(params, root, "clip_only") == first
    assert {png.name: png.read_bytes() for png in samples.glob("*.png")} == grids  # the first seed's drawings
    assert peer.read_text() == scores  # the kept seed's images and per-image scores, copied again


def test_fast_path_takes_reference_images(trained):
    params, root, _, _ = trained
    pipe = reference_pipeline(params, root, "main", params.seeds[0])
    world = make_world(params)
    subject = world.subjects("object", "eval")[0]
    photo = world.render(subject, None, seed=3).image
    reference = world.render(world.subjects("object", "eval")[5], world.contexts("object")[2], seed=4).image
    out, _ = pipe.generate(photo, reference[None], seed=torch.Generator().manual_seed(0))
    again, _ = pipe.generate(photo, reference[None], seed=torch.Generator().manual_seed(0))
    assert out.shape == (1, 16, 16, 3)
    np.testing.assert_array_equal(out, again)
    assert isinstance(world, World)


def test_reference_images_are_cached_per_prompt(trained, monkeypatch):
    params, root, _, _ = trained
    references = PromptReferences.from_params(params, root)
    first = references(["a ball on the beach", "a man in the snow"], seed=3)
    calls = []
    monkeypatch.setattr(
        references, "t2i", lambda prompts, **kw: calls.append(prompts) or np.zeros((len(prompts), 16, 16, 3), np.uint8)
    )
    again = references(["a man in the snow", "a ball on the beach"], seed=3)
    np.testing.assert_array_equal(first[::-1], again)
    assert calls == []  # nothing redrawn
    references.save()
    reloaded = PromptReferences.from_params(params, root)
    assert len(reloaded.cache) >= 2


def test_encoder_ablation_table(trained):
    """Table 5: generators on the smaller CLIP and the smaller DINO, each row beside `both` and the ceiling."""
    import dataclasses

    params, root, _, _ = trained
    params = dataclasses.replace(params, seeds=params.seeds[:1])  # seed loops: test_variants_and_table's
    for name in ("clip_small", "dino_small"):
        train_generator_stage(params, root, name)
    train_assistant_stage(params, root, "mse_clip_small")  # c_hat in the smaller CLIP's space
    for variant in ("clip_small_dino_large", "clip_large_dino_small", "both", "real_images"):
        evaluate_variant(params, root, variant)
    rows = ablation_table(params, root, "ablation_encoders")
    assert [r.variant for r in rows[::2]] == ["clip_small_dino_large", "clip_large_dino_small", "both", "real_images"]
    small = CafeGenerator.from_pretrained(ProjectPaths(root).generator("clip_small", params.seeds[0]))
    main = CafeGenerator.from_pretrained(ProjectPaths(root).generator("main", params.seeds[0]))
    assert small.config.clip_dim == main.config.clip_dim  # both CLIPs project to the same width
    assert (ProjectPaths(root).ablation("ablation_encoders") / "table.md").is_file()


def test_half_precision_feature_caches_train_their_own_g(trained, tmp_path):
    """features.dtype stores every cache G reads in half precision (half the disk at scale); G
    trains from them, under another key than the float32 G, so neither stands in for the other."""
    import dataclasses
    import shutil

    from cafe_core.workbench.artifacts import read_marker
    from cafe_core.workbench.config import FeatureParams
    from cafe_core.workbench.stages.train_generator import GENERATOR_MARKER

    params, root, _, _ = trained
    for folder in ("models/world", "data/datasets"):
        shutil.copytree(root / folder, tmp_path / folder)
    half = dataclasses.replace(params, seeds=params.seeds[:1], features=FeatureParams("float16"))
    train_generator_stage(half, tmp_path, "main")
    caches = sorted((tmp_path / "data/features").glob("features-*.npy"))
    assert [c.name.split("-")[1] for c in caches] == ["clip", "dino", "targets"]
    assert {np.load(c, mmap_mode="r").dtype for c in caches} == {np.dtype(np.float16)}
    seed = params.seeds[0]
    key = read_marker(ProjectPaths(tmp_path).generator("main", seed), GENERATOR_MARKER)["key"]
    assert key != read_marker(ProjectPaths(root).generator("main", seed), GENERATOR_MARKER)["key"]
    with pytest.raises(ParamsError, match="features.dtype must be one of float32, float16, bfloat16"):
        FeatureParams("float64")


def test_g_retrains_when_its_rows_change_at_the_same_count(trained, tmp_path):
    """G's skip key holds the rows it trains on by content: a dataset of as many kept rows with one
    target swapped retrains G, where a key on the row count (or on the code that wrote the rows)
    would reuse a G that never saw them."""
    import dataclasses
    import shutil

    from cafe_core.data.dataset import DatasetWriter, open_dataset
    from cafe_core.workbench.artifacts import read_marker
    from cafe_core.workbench.stages.common import GENERATOR_MARKER

    params, root, _, _ = trained
    one = dataclasses.replace(params, seeds=params.seeds[:1])
    for folder in ("models/world", "models/generator/main", "data/features"):
        shutil.copytree(root / folder, tmp_path / folder)
    teacher = open_dataset(root / "data/datasets/teacher")
    rows = list(teacher.rows())
    a, b = np.flatnonzero(teacher.kept())[:2]
    rows[a]["y"], rows[b]["y"] = rows[b]["y"], rows[a]["y"]
    with DatasetWriter(tmp_path / "data/datasets/teacher", info=teacher.info) as writer:
        writer.add_many(rows)
    paths, seed = ProjectPaths(tmp_path), params.seeds[0]
    before = read_marker(paths.generator("main", seed), GENERATOR_MARKER)
    train_generator_stage(one, tmp_path, "main")
    after = read_marker(paths.generator("main", seed), GENERATOR_MARKER)
    assert open_dataset(tmp_path / "data/datasets/teacher").kept().sum() == teacher.kept().sum()
    assert after["key"] != before["key"]  # retrained on the swapped rows


def test_a_finetuned_generator_starts_from_its_init_of_the_same_seed(trained, tmp_path):
    """`finetuned` Gs (table 3's self-distillation rows) start from the trained G they name, seed for
    seed: at learning rate 0 they publish that G's weights unchanged. Without it they say what to run."""
    import dataclasses
    import shutil

    params, root, _, _ = trained
    for folder in ("models/world", "models/generator/main", "data/datasets", "data/features"):
        shutil.copytree(root / folder, tmp_path / folder)
    frozen = dataclasses.replace(params, generator=dataclasses.replace(params.generator, lr=0.0))
    stats = train_generator_stage(frozen, tmp_path, "continued")
    assert sorted(stats) == params.seeds
    paths = ProjectPaths(tmp_path)
    for seed in params.seeds:
        start = CafeGenerator.from_pretrained(paths.generator("main", seed)).trainable_state_dict()
        tuned = CafeGenerator.from_pretrained(paths.generator("continued", seed)).trainable_state_dict()
        assert start.keys() == tuned.keys()
        assert all(torch.equal(start[k], tuned[k]) for k in start)
    shutil.rmtree(paths.generator("main", params.seeds[0]))
    shutil.rmtree(paths.generator("continued", params.seeds[0]))
    with pytest.raises(
        FileNotFoundError, match=r"fine-tunes G 'main' of training seed 0.*dvc repro train_generator@main"
    ):
        train_generator_stage(frozen, tmp_path, "continued")


def test_generator_training_is_reproducible(trained, tmp_path):
    """Two runs of the stage train the same G bit for bit, seed by seed (new layers start from the training seed)."""
    import shutil

    params, root, _, _ = trained
    for folder in ("models/world", "data/datasets", "data/features"):
        shutil.copytree(root / folder, tmp_path / folder)
    train_generator_stage(params, tmp_path, "main")
    for seed in params.seeds:
        first, again = ProjectPaths(root).generator("main", seed), ProjectPaths(tmp_path).generator("main", seed)
        for file in ("unet/diffusion_pytorch_model.safetensors", "cafe_conditioning.safetensors"):
            assert (first / file).read_bytes() == (again / file).read_bytes(), file


def test_training_seeds_train_side_by_side(trained, tmp_path, monkeypatch):
    """With ``compute.seed_processes: 2`` the stage trains its seeds at once, a process each: every
    seed's G is published under the key the stage gives it when training them in turn (how seeds run
    is not in the key), the seeds' MLflow runs nest in the stage's run, which counts both, and a
    rerun finds both trained."""
    import dataclasses
    import shutil

    from mlflow import MlflowClient

    from cafe_core.workbench import tracking
    from cafe_core.workbench.artifacts import read_marker
    from cafe_core.workbench.stages.common import GENERATOR_MARKER

    params, root, _, _ = trained
    for folder in ("models/world", "data/datasets", "data/features"):
        shutil.copytree(root / folder, tmp_path / folder)
    side = dataclasses.replace(params, compute=dataclasses.replace(params.compute, seed_processes=2))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv(tracking.RUN_ENV, raising=False)
    handed = spy_side_by_side(monkeypatch, "cafe_core.workbench.stages.train_generator")
    assert sorted(train_generator_stage(side, tmp_path, "main")) == params.seeds
    assert handed == [params.seeds]
    for seed in params.seeds:
        mine = read_marker(ProjectPaths(tmp_path).generator("main", seed), GENERATOR_MARKER)
        assert mine["key"] == read_marker(ProjectPaths(root).generator("main", seed), GENERATOR_MARKER)["key"]
        CafeGenerator.from_pretrained(ProjectPaths(tmp_path).generator("main", seed))
    train_generator_stage(side, tmp_path, "main")  # the rerun: both found, none handed to a worker
    assert handed == [params.seeds, []]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(tracking.experiment_name(params)).experiment_id
    first, again = client.search_runs(
        [exp], "tags.`cafe.role` = 'stage' and tags.`cafe.stage` = 'train_generator@main'", order_by=["start_time"]
    )
    assert (first.data.tags["cafe.built"], again.data.tags["cafe.reused"]) == ("2", "2")
    seeds = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{first.info.run_id}'", order_by=["run_name"])
    assert [(r.info.run_name, r.info.status) for r in seeds] == [("seed-0", "FINISHED"), ("seed-1", "FINISHED")]


def test_evaluation_scores_its_seeds_side_by_side_on_the_same_cases(trained, tmp_path, monkeypatch):
    """With ``compute.seed_processes: 2`` an evaluation scores its training seeds at once, a process
    each, and writes the rows scoring them in turn writes: the same cases, subjects and noise (the
    scores up to float rounding, one thread against two), every seed counted on the stage's run."""
    import dataclasses
    import json
    import shutil

    from mlflow import MlflowClient

    from cafe_core.workbench import tracking

    params, root, _, _ = trained
    in_turn = evaluate_variant(params, root, "both")
    copy = tmp_path / "project"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("evaluations", "variants", "*.db", "mlruns"))
    side = dataclasses.replace(params, compute=dataclasses.replace(params.compute, seed_processes=2))
    uri = f"sqlite:///{tmp_path / 'side-by-side.db'}"  # apart from the run in turn's store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv(tracking.RUN_ENV, raising=False)
    handed = spy_side_by_side(monkeypatch, "cafe_core.workbench.stages.evaluate")
    side_by_side = evaluate_variant(side, copy, "both")
    assert handed == [params.seeds]
    rows = [json.loads(ProjectPaths(p).variant_subjects("both").read_text()) for p in (root, copy)]
    labels = [[(r["seed"], r["domain"], r["subject"]) for r in found] for found in rows]
    assert labels[0] == labels[1] and {seed for seed, _, _ in labels[1]} == set(params.seeds)
    for domain, scores in in_turn.items():
        assert scores.keys() == side_by_side[domain].keys()
        for metric, value in scores.items():
            assert side_by_side[domain][metric] == pytest.approx(value, abs=1e-3), (domain, metric)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(tracking.experiment_name(params)).experiment_id
    (stage,) = client.search_runs([exp], "tags.`cafe.stage` = 'evaluate@both' and tags.`cafe.role` = 'stage'")
    assert stage.data.tags["cafe.built"] == str(len(params.seeds))
