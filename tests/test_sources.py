"""The data seam: `params.yaml: data` picks each stage's source; a source offers what it has and
names what it lacks; a folder in the project's format round-trips what the world writes."""

import dataclasses

import numpy as np
import pytest

from cafe_core.benchmarks.dreambench import DreamBenchSource, load_dreambench
from cafe_core.data.quadruplets import write_dataset
from cafe_core.data.sources import DataUnavailable, FolderSource
from cafe_core.workbench.config import DataParams, ParamsError, load_params
from cafe_core.workbench.evaluation_sources import evaluation_source
from cafe_core.workbench.sources import training_source
from cafe_core.world.source import WorldSource

MINE = DataParams(train="mine", evaluation="world", folders={"mine": "mine"})  # the folder tmp_path/mine


@pytest.fixture(scope="module")
def params(project_root):
    return load_params(project_root / "params.yaml")


def test_world_is_the_mini_default_for_both_roles(params, tmp_path):
    assert isinstance(training_source(params, tmp_path), WorldSource)
    assert isinstance(evaluation_source(params, tmp_path), WorldSource)


def test_a_folder_round_trips_the_worlds_training_data(params, tmp_path):
    world = training_source(params, tmp_path)
    quads = world.quadruplets(40, seed=3)
    fit = world.dialogues(12, part="fit", seed=3, multi_turn_p=0.5)
    val = world.dialogues(4, part="val", seed=4)
    assert not set(fit.subject_ids) & set(val.subject_ids)  # validation subjects are held apart
    write_dataset(quads, tmp_path / "mine" / "quadruplets")
    source = training_source(dataclasses.replace(params, data=MINE), tmp_path)
    assert isinstance(source, FolderSource)
    again = source.quadruplets(40, seed=0)
    np.testing.assert_array_equal(again.x, quads.x)
    np.testing.assert_array_equal(again.y, quads.y)
    assert again.instructions == quads.instructions and again.failure_names() == quads.failure_names()
    assert again.classes == quads.classes and again.provenance == quads.provenance
    np.testing.assert_array_equal(again.subject_ids, quads.subject_ids)  # the world writes its ids
    np.testing.assert_array_equal(again.y_subject_ids, quads.y_subject_ids)
    np.testing.assert_array_equal(again.y_seeds, quads.y_seeds)
    np.testing.assert_array_equal(again.y_context_ids == -1, quads.y_context_ids == -1)  # neutral stays neutral
    assert source.subject_words() == sorted(set(quads.classes))  # what the CLI names beside an unknown word
    assert "ball" in world.subject_words() and "dog" not in world.subject_words()
    assert source.response_fulfils(int(fit.subject_ids[0]), fit.responses[0], fit.valid[0]) is None  # cannot judge
    assert world.response_fulfils(int(fit.subject_ids[0]), fit.responses[0], fit.valid[0]) is True


def test_the_assistant_learns_from_the_dialogues_of_the_rows_the_filter_keeps(params, tmp_path):
    """M trains on the same dataset as G (the paper's dialogues are written for the kept
    quadruplets): every row of the user's folder before the filter runs, the kept rows of
    teacher_data's scored copy after; validation subjects are never fitted."""
    quads = training_source(params, tmp_path).quadruplets(60, seed=5)
    write_dataset(quads, tmp_path / "mine" / "quadruplets")
    source = training_source(dataclasses.replace(params, data=MINE), tmp_path)
    fit, val = (source.dialogues(0, part=part, seed=0) for part in ("fit", "val"))
    assert len(fit) + len(val) == len(quads) and len(val) > 0
    assert not set(fit.subject_ids) & set(val.subject_ids)
    by_message = {str(p["messages"]): (p["response"], i) for i, p in enumerate(quads.provenance)}
    response, row = by_message[str(fit.messages[0])]
    assert fit.responses[0] == response
    # the fit set streams its images (a real training set may not fit in memory decoded); val's are decoded
    assert len(fit.y) == len(fit) and isinstance(val.y, np.ndarray)
    np.testing.assert_array_equal(fit.y.subset([0]).decode()[0], quads.y[row])  # the target is the teacher's y
    assert fit.valid[0] == [quads.provenance[row]["context"]]

    scores = np.linspace(0.0, 1.0, len(quads), dtype=np.float32)  # the first half fails the CLIP test
    write_dataset(
        quads,
        tmp_path / "data" / "datasets" / "teacher",
        clip_score=scores,
        dino_score=scores + 1,
        thresholds=(0.5, 0.0),
    )
    kept = sum(len(source.dialogues(0, part=part, seed=0)) for part in ("fit", "val"))
    assert kept == int((scores >= 0.5).sum())


def test_missing_data_is_named(params, tmp_path):
    source = FolderSource(tmp_path / "empty")
    with pytest.raises(DataUnavailable, match="quadruplets/manifest.json does not exist"):
        source.quadruplets(10, seed=0)
    with pytest.raises(DataUnavailable, match="has no evaluation cases"):
        source.eval_cases("object", 1, 1, 0, 1)
    with pytest.raises(ParamsError, match="evaluation data only"):
        training_source(dataclasses.replace(params, data=DataParams(train="dreambench", evaluation="world")), tmp_path)
    with pytest.raises(ParamsError, match="data.evaluation names 'mine'.*put a folder of your own under data.folders"):
        DataParams(train="world", evaluation="mine")  # a folder DVC would not track: named only through data.folders
    with pytest.raises(ParamsError, match="data.train names 'data/mine'"):
        DataParams(train="data/mine", evaluation="world", folders={"mine": "data/mine"})
    with pytest.raises(ParamsError, match="data.folders: world name built-in sources"):
        DataParams(train="world", evaluation="world", folders={"world": "data/w"})


def test_dreambench_cases_are_its_subjects_photos_and_prompts(dreambench):
    source = DreamBenchSource(load_dreambench(dreambench))
    assert source.domains == ("object",)
    cases = source.eval_cases("object", 3, 2, seed=0, n_references=1)
    assert [c.subject for c in cases] == [s.name for s in source.bench.subjects[:3]]
    for case, subject in zip(cases, source.bench.subjects):
        assert len(case.reference_images) == len(subject.images)  # every photo is a reference
        assert [p.prompt for p in case.prompts] == source.bench.prompts(subject)[:2]
        assert all(subject.cls in p.cafe_prompt and "this" in p.cafe_prompt for p in case.prompts)
    with pytest.raises(DataUnavailable, match="domain 'face'"):
        source.eval_cases("face", 1, 1, 0, 1)
    with pytest.raises(DataUnavailable, match="ground-truth"):
        source.target_images(cases[0], [0, 1])


def _faces_folder(folder, prompts="a photo of {} as a chef\n\n{} on the beach\na painting of {}\n"):
    """ada: one photo (as E4T's researchers have); grace: two, the first by name being the input."""
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    (folder / "prompts.txt").write_text(prompts)
    photo = lambda: Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8))  # noqa: E731
    photo().save(folder / "ada.png")
    (folder / "grace").mkdir()
    first, second = photo(), photo()
    second.save(folder / "grace" / "2.jpg")
    first.save(folder / "grace" / "1.png")
    (folder / "notes.txt").write_text("not a photo")
    return np.asarray(first)


def test_a_faces_folder_gives_the_faces_protocols_cases(tmp_path):
    from cafe_core.benchmarks.faces import FaceFolderSource
    from cafe_core.data.cases import CAFE_PROMPT_FORMS

    first = _faces_folder(tmp_path / "faces")
    source = FaceFolderSource(tmp_path / "faces")
    assert source.domains == ("face",)
    ada, grace = source.eval_cases("face", 2, 2, seed=0, n_references=1)
    assert (ada.subject, grace.subject) == ("ada", "grace") and ada.domain == grace.domain == "face"
    assert len(ada.reference_images) == 1 and len(grace.reference_images) == 2  # ID compares with every photo
    np.testing.assert_array_equal(np.asarray(grace.input_image), first)
    assert [p.prompt for p in grace.prompts] == ["a photo of a person as a chef", "a person on the beach"]
    forms = {form.format(request) for form in CAFE_PROMPT_FORMS for request in ("a photo of this person as a chef",)}
    assert grace.prompts[0].cafe_prompt in forms
    assert grace.prompts[1].label == "… on the beach"
    with pytest.raises(ValueError, match="has 2 people, got 3"):
        source.eval_cases("face", 3, 1, seed=0, n_references=1)
    (every,) = source.eval_cases("face", 1, 25, seed=0, n_references=1)  # DreamBench's 25: all 3 of these
    assert len(every.prompts) == 3
    with pytest.raises(DataUnavailable, match="no evaluation cases of domain 'object'"):
        source.eval_cases("object", 1, 1, seed=0, n_references=1)
    with pytest.raises(DataUnavailable, match="ground-truth target images"):
        source.target_images(ada, [0])
    with pytest.raises(DataUnavailable, match="no validation cases"):  # the guidance grid keeps params' scales
        source.validation_cases("face", 1, 1, seed=0, n_references=1)


def test_a_faces_folder_says_what_is_wrong_with_it(tmp_path):
    from cafe_core.benchmarks.faces import FaceFolderSource

    with pytest.raises(FileNotFoundError, match="faces folder .*missing does not exist"):
        FaceFolderSource(tmp_path / "missing")
    _faces_folder(tmp_path / "slotless", prompts="a photo of {} as a chef\na person on the beach\n")
    with pytest.raises(ValueError, match=r"prompts.txt:2: a prompt needs exactly one \{\}"):
        FaceFolderSource(tmp_path / "slotless")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "prompts.txt").write_text("{} smiling\n")
    with pytest.raises(ValueError, match="holds no photo"):
        FaceFolderSource(tmp_path / "empty")


def test_evaluation_data_can_name_a_source_per_domain(params, tmp_path, dreambench, monkeypatch):
    from cafe_core.data.sources import DomainSources

    monkeypatch.setenv("CAFE_DREAMBENCH", str(dreambench))
    _faces_folder(tmp_path / "data" / "faces")

    def source(evaluation):
        data = DataParams("world", evaluation, folders={"faces": "data/faces"})
        return evaluation_source(dataclasses.replace(params, data=data), tmp_path)

    both = source({"object": "dreambench", "face": "faces"})
    assert isinstance(both, DomainSources) and both.domains == ("object", "face")
    (person,) = both.eval_cases("face", 1, 1, seed=0, n_references=1)
    (thing,) = both.eval_cases("object", 1, 1, seed=0, n_references=1)
    assert person.subject == "ada" and thing.subject == load_dreambench(dreambench).subjects[0].name
    with pytest.raises(DataUnavailable, match="ground-truth target images"):
        both.target_images(person, [0])  # the ceiling rows stay empty on real photos
    assert both.name == "object: dreambench, face: data/faces"  # evaluations are keyed by it: no absolute path
    assert isinstance(source({"object": "world", "face": "world"}), WorldSource)  # one source: itself
    faces_only = source({"face": "world"})
    assert faces_only.domains == ("face",)
    with pytest.raises(ParamsError, match="maps domains"):
        source({"scene": "world"})
    with pytest.raises(ParamsError, match="a faces folder"):
        source({"object": "faces"})  # a folder is a faces folder
    with pytest.raises(ParamsError, match="has no 'face' cases"):
        source({"face": "dreambench"})


def test_params_read_a_source_per_domain(tmp_path, project_root):
    import yaml

    raw = yaml.safe_load((project_root / "params.yaml").read_text())
    raw["data"]["evaluation"] = {"object": "world", "face": "faces"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    data = load_params(tmp_path / "params.yaml").data
    assert data.evaluation == {"object": "world", "face": "faces"} and data.folder("faces") == "data/faces"
    raw["data"]["evaluation"] = {"face": 3}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match="data.evaluation.face"):
        load_params(tmp_path / "params.yaml")


def test_data_folders_are_the_projects_not_a_profiles(tmp_path, project_root):
    """dvc.yaml depends on `${data.folders.<key>}`, which DVC reads from the top level of params.yaml:
    a profile that pointed a key elsewhere would read a folder DVC does not track."""
    import yaml

    raw = yaml.safe_load((project_root / "params.yaml").read_text())
    raw["profile_overrides"]["sd2"]["data"]["folders"] = {"faces": "data/my_faces"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match="profile_overrides.sd2.data.folders.*set them at the top level"):
        load_params(tmp_path / "params.yaml")


def test_every_data_folder_is_a_dependency_of_the_stages_that_read_it(project_root):
    """Each stage that reads a source by name depends on every folder data.folders names, through
    DVC's templating, so `dvc exp run -S data.folders.faces=...` reruns them."""
    import yaml

    stages = yaml.safe_load((project_root / "dvc.yaml").read_text())["stages"]
    folders = load_params(project_root / "params.yaml").data.folders
    assert set(folders) == {"training", "faces"}
    # the training folder is read by teacher_data (the assistant reads teacher_data's scored copy of it)
    readers = {"teacher_data": "training"}
    readers |= {name: "faces" for name, s in stages.items() if "data.evaluation" in s.get("do", s).get("params", [])}
    assert {"guidance", "evaluate", "evaluate_real_images", "evaluate_gt_embedding"} <= set(readers)
    for name, key in readers.items():
        assert f"${{data.folders.{key}}}" in stages[name].get("do", stages[name])["deps"], name
