"""dvc.yaml's dependencies are correct by construction: each stage depends on exactly the cafe_core
modules its notebook imports (transitively), and each ablation stage on its rows in params.yaml."""

import pytest
import yaml

from cafe_core.workbench.code_deps import PACKAGE, main, stage_code_deps, stage_command

ROOT = PACKAGE.parent
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def _body(stage: dict) -> dict:
    return stage.get("do", stage)


@pytest.mark.parametrize("name", sorted(DVC))
def test_code_deps_are_what_the_stage_imports(name):
    body = _body(DVC[name])
    _, notebook = stage_command(body["cmd"], ROOT)
    assert notebook.is_file(), f"{name}: {notebook} does not exist"
    assert str(notebook.relative_to(ROOT)) in body["deps"], f"{name} must depend on its notebook"
    declared = sorted(d for d in body["deps"] if d.startswith("cafe_core"))
    imported = stage_code_deps(body["cmd"], ROOT)
    assert declared == imported, (
        f"{name}: dvc.yaml declares {declared} but the stage imports {imported}: "
        "run `python -m cafe_core.workbench.code_deps --write`"
    )


def test_a_stale_dvc_yaml_is_rewritten(tmp_path):
    """A new import in a stage's code shows up as a dependency once `--write` runs."""
    import shutil

    for item in ("notebooks", "dvc.yaml"):
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, tmp_path / item)
    text = (tmp_path / "dvc.yaml").read_text()
    (tmp_path / "dvc.yaml").write_text(text.replace("      - cafe_core/models/encoders.py\n", "", 1))
    assert main(["--root", str(tmp_path)]) == 1
    assert main(["--root", str(tmp_path), "--write"]) == 0
    assert (tmp_path / "dvc.yaml").read_text() == text


def test_editing_a_table_reruns_the_tables_not_the_training():
    """Dependencies are module files: the world's and G's training never name the tables' code."""
    table = set(stage_code_deps(_body(DVC["ablation_embeddings"])["cmd"], ROOT))
    assert {"cafe_core/benchmarks/tables.py", "cafe_core/workbench/stages/ablation.py"} <= table
    for stage in ("pretrain_world", "train_generator"):
        deps = set(_body(DVC[stage])["deps"])
        assert not deps & {"cafe_core/benchmarks/tables.py", "cafe_core/workbench/stages/ablation.py"}
        assert "cafe_core/world/rendering" in deps  # a package run whole is named as its folder


@pytest.mark.parametrize("target", sorted(PARAMS["ablations"]))
def test_ablation_stage_reads_the_rows_params_yaml_names(target):
    body = DVC[target]
    rows = {f"results/variants/{v}/{f}" for v in PARAMS["ablations"][target] for f in ("metrics.json", "subjects.json")}
    declared = {d for d in body["deps"] if d.startswith("results/variants/")}
    assert declared == rows, f"{target}: dvc.yaml depends on {sorted(declared)}, params.yaml's rows are {sorted(rows)}"
    assert f"ablations.{target}" in body["params"]


def test_the_report_reads_every_table_and_its_rows_sample_grids():
    deps = set(DVC["report"]["deps"])
    for target, rows in PARAMS["ablations"].items():
        assert {f"results/{target}/table.md", f"results/{target}/verdicts.json"} <= deps
        assert {f"results/variants/{v}/samples" for v in rows} <= deps, target
    assert "results/fidelity/metrics.json" in deps and "ablations" in DVC["report"]["params"]


def test_each_evaluation_depends_on_the_models_it_draws_with():
    """A variant's G and M (all training seeds), the guidance scales; the oracle row on the full system's G."""
    evaluate = _body(DVC["evaluate"])
    assert DVC["evaluate"]["foreach"] == "${variants}"
    needed = {"models/generator/${item.generator}", "models/assistant/${item.assistant}", "results/guidance/grid.json"}
    assert needed <= set(evaluate["deps"]) and "seeds" in evaluate["params"]
    assert all(spec.get("assistant") for spec in PARAMS["variants"].values()), "every table row draws from c_hat"
    system = PARAMS["variants"][PARAMS["fidelity"]["variant"]]["generator"]
    gt = DVC["evaluate_gt_embedding"]
    assert f"models/generator/${{variants.{PARAMS['fidelity']['variant']}.generator}}" in gt["deps"]
    assert system == PARAMS["guidance"]["generator"]  # the scales are chosen on the G the full system uses
    assistant = _body(DVC["train_assistant"])
    assert {"models/generator/${item.generator}", "results/guidance/grid.json"} <= set(assistant["deps"])


INTERACTIVE = {"chat", "blending_demo", "compare_runs"}
"""Notebooks a user opens in JupyterLab (tests/test_notebooks.py runs them); every other one is a stage."""


def test_every_notebook_is_a_stage_or_an_interactive_demo():
    staged = {stage_command(_body(s)["cmd"], ROOT)[1].stem for s in DVC.values()}
    assert not staged & INTERACTIVE
    assert staged | INTERACTIVE == {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}


@pytest.mark.parametrize(
    "name",
    [
        "pretrain_world",
        "teacher_data",
        "review",
        "self_distill",
        "train_generator",
        "finetune_generator",
        "train_assistant",
    ],
)
def test_training_stages_never_depend_on_an_evaluation_benchmark(name):
    """Editing DreamBench's or the faces folder's reader, the samples layout or the evaluation stage
    must not rerun a stage that makes training data or trains a model, nor change its skip key."""
    deps = set(_body(DVC[name])["deps"])
    readers = {f"cafe_core/benchmarks/{m}.py" for m in ("dreambench", "faces", "samples")}
    readers |= {"cafe_core/workbench/evaluation_sources.py", "cafe_core/workbench/stages/evaluate.py"}
    assert not deps & readers, f"{name} depends on {sorted(deps & readers)}"


def test_generator_training_reads_only_the_keys_its_weights_depend_on():
    """A sampling setting (`dvc exp run -S generator.clip_scale=5`) must not rerun G's training stage."""
    from cafe_core.workbench.config import GeneratorParams

    declared = [p for p in _body(DVC["train_generator"])["params"] if p.startswith("generator.")]
    assert declared == [f"generator.{k}" for k in GeneratorParams.TRAINING_KEYS]
    assert "generator" not in _body(DVC["train_generator"])["params"]


def test_plumbing_edits_keep_skip_keys_and_model_edits_change_them(tmp_path, monkeypatch):
    """Editing how params are read or runs are logged, or a model's comments and docstrings, reruns a
    stage without retraining its model; editing a model's code retrains it."""
    from cafe_core.workbench import code_deps

    real = code_deps.module_file
    before = code_deps.code_digest("cafe_core.world.pretrain")

    def edited(name, edit):
        def module_file(module):
            path = real(module)
            if module != name:
                return path
            copy = tmp_path / f"{module}.py"
            copy.write_text(edit(path.read_text()))
            return copy

        return module_file

    def set_digest(name, edit):
        monkeypatch.setattr(code_deps, "module_file", edited(name, edit))
        return code_deps.code_digest("cafe_core.world.pretrain")

    assert set_digest("cafe_core.workbench.config", lambda text: text + "\nEDITED = 1\n") == before
    words = '"""Pretraining CAFE-mini\'s foundation models inside the world.'
    assert words in real("cafe_core.world.pretrain").read_text()
    reworded = lambda text: text.replace(words, '"""Reworded.') + "\n# a comment\n"  # noqa: E731
    assert set_digest("cafe_core.world.pretrain", reworded) == before
    assert set_digest("cafe_core.world.pretrain", lambda text: text + "\nEDITED = 1\n") != before


def test_gs_skip_key_holds_its_rows_not_the_code_that_finds_them(tmp_path, monkeypatch):
    """G's key hashes the rows it reads by content, so editing where datasets or evaluation data come
    from (the teacher stage, the data sources) retrains no G; editing its training or data reader does."""
    from cafe_core.workbench import code_deps
    from cafe_core.workbench.stages import train_generator

    real = code_deps.module_file

    def digest_after(name):
        def module_file(module):
            path = real(module)
            if module != name:
                return path
            copy = tmp_path / f"{module}.py"
            copy.write_text(path.read_text() + "\nEDITED = 1\n")
            return copy

        monkeypatch.setattr(code_deps, "module_file", module_file)
        return train_generator.generator_code()

    before = train_generator.generator_code()
    for found_by in (
        "cafe_core.workbench.stages.teacher_data",
        "cafe_core.workbench.sources",
        "cafe_core.data.sources",
    ):
        assert digest_after(found_by) == before, found_by
    for reads in ("cafe_core.workbench.training", "cafe_core.data.dataset", "cafe_core.models.generator"):
        assert digest_after(reads) != before, reads
    assert code_deps.code_digest(train_generator.__name__) != before  # unpruned, the sources were in


def test_table_3s_data_stages_depend_on_what_they_read():
    """G reads the dataset its spec names; self-distillation draws with its assistant and that
    assistant's G (DVC cannot look the G up, so dvc.yaml names it and this test checks it)."""
    assert "data/datasets/${item.data}" in _body(DVC["train_generator"])["deps"]
    assert all("data" in spec for spec in PARAMS["generators"].values()), "${item.data} needs every generator's"
    tuned = _body(DVC["finetune_generator"])
    assert {"data/datasets/${item.data}", "models/generator/${item.init}"} <= set(tuned["deps"])  # it starts from init
    assert "finetuned.${key}" in tuned["params"] and DVC["finetune_generator"]["foreach"] == "${finetuned}"
    distill = DVC["self_distill"]
    assistant = PARAMS["selfdistill"]["assistant"]
    generator = PARAMS["assistants"][assistant]["generator"]
    assert {f"models/generator/{generator}", "models/assistant/${selfdistill.assistant}"} <= set(distill["deps"])
    assert {"data/datasets/teacher", "results/teacher/filter.json"} <= set(distill["deps"])
    assert "data/datasets/teacher" in DVC["review"]["deps"] and "review" in DVC["review"]["params"]
