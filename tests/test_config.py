"""params.yaml validation: a typo must fail at once, naming the key."""

import copy

import pytest
import yaml

from cafe_core.workbench.config import PROFILES, ParamsError, load_params, params_from_dict, to_dict


@pytest.fixture()
def raw(project_root):
    return yaml.safe_load((project_root / "params.yaml").read_text())


def test_project_params_load(project_root):
    params = load_params(project_root / "params.yaml")
    assert params.profile.name == "mini"
    assert params.pretrain.clip.lr == pytest.approx(1e-3)
    assert to_dict(params)["pretrain"]["t2i"]["block_out_channels"] == params.pretrain.t2i.block_out_channels


def test_unknown_profile_names_key_and_choices(raw):
    raw["profile"] = "sd3"
    with pytest.raises(ParamsError, match=r"unknown profile 'sd3' \(key 'profile'\).*mini.*sd2"):
        params_from_dict(raw)


@pytest.mark.parametrize(
    "path", ["world.image_size", "pretrain.clip.steps", "world_eval", "pretrain.t2i.guidance_scale"]
)
def test_missing_key_is_named(raw, path):
    data = copy.deepcopy(raw)
    *parents, leaf = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    del node[leaf]
    with pytest.raises(ParamsError, match=f"missing key '{path}'"):
        params_from_dict(data)


def test_unknown_key_is_named(raw):
    raw["pretrain"]["clip"]["hiden_size"] = 3
    with pytest.raises(ParamsError, match=r"unknown key 'pretrain.clip.hiden_size'"):
        params_from_dict(raw)


def test_wrong_type_is_named(raw):
    raw["world"]["image_size"] = "big"
    with pytest.raises(ParamsError, match=r"key 'world.image_size' must be int"):
        params_from_dict(raw)


def test_profile_override_and_file_errors(tmp_path, raw):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert load_params(path, profile="sd2").profile is PROFILES["sd2"]
    with pytest.raises(ParamsError, match="does not exist"):
        load_params(tmp_path / "nope.yaml")
    path.write_text("profile: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(path)


def test_profile_overrides_apply_to_their_profile_only(raw):
    raw["profile_overrides"] = {"sd2": {"assistant": {"batch_size": 128}}}
    assert params_from_dict(raw).assistant.batch_size == 32
    sd2 = params_from_dict(raw, profile="sd2")
    assert sd2.assistant.batch_size == 128 and sd2.assistant.lr == params_from_dict(raw).assistant.lr
    raw["profile_overrides"] = {"sd2": {"assistant": {"batch": 128}}}
    with pytest.raises(ParamsError, match=r"profile_overrides\.sd2\.assistant\.batch' overrides nothing"):
        params_from_dict(raw, profile="sd2")


def test_shipped_sd2_settings_use_the_papers_assistant_optimiser(project_root):
    from cafe_core.workbench.training import AssistantTraining

    sd2 = load_params(project_root / "params.yaml", profile="sd2").assistant
    paper = AssistantTraining()
    assert (sd2.batch_size, sd2.lr) == (paper.batch_size, paper.lr) == (128, 2e-3)


def test_shipped_sd2_settings_train_g_with_the_papers_optimiser(project_root):
    sd2 = load_params(project_root / "params.yaml", profile="sd2").generator
    assert (sd2.batch_size, sd2.lr) == (64, 2e-5)  # paper, section 4: AdamW, lr 2e-5, batch 64


def test_seeds_run_side_by_side_on_cpus_and_in_turn_on_one_gpu(project_root, raw):
    """mini (CPU cores) trains its three seeds at once; sd2 (one GPU) gives each seed the whole device."""
    assert load_params(project_root / "params.yaml").compute.seed_processes == 3
    assert load_params(project_root / "params.yaml", profile="sd2").compute.seed_processes == 1
    raw["compute"]["seed_processes"] = 0
    with pytest.raises(ParamsError, match="compute.seed_processes must be >= 1, got 0"):
        params_from_dict(raw)


@pytest.mark.parametrize(("name", "processes"), [("one-node-8-gpus", 8), ("two-nodes-8-gpus", 16)])
def test_accelerate_configs_split_the_papers_global_batches(project_root, name, processes):
    """Each process takes an equal share of each step's batch (training refuses a batch that does not divide)."""
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(project_root / "configs/accelerate" / f"{name}.yaml")
    assert config.num_processes == processes and config.mixed_precision == "bf16"
    assert config.distributed_type == "MULTI_GPU" and config.num_machines == processes // 8
    sd2 = load_params(project_root / "params.yaml", profile="sd2")
    assert sd2.generator.batch_size % processes == 0 and sd2.assistant.batch_size % processes == 0


def test_shipped_sd2_settings_filter_at_the_papers_thresholds_and_read_real_data(project_root):
    from cafe_core.data.filter import SD2_FILTER

    sd2 = load_params(project_root / "params.yaml", profile="sd2")
    assert (sd2.teacher.clip_threshold, sd2.teacher.dino_threshold) == (
        SD2_FILTER.clip_threshold,
        SD2_FILTER.dino_threshold,
    )
    assert sd2.data.evaluation == {"object": "dreambench", "face": "faces"} and sd2.data.train == "training"
    assert sd2.data.folder("faces") == "data/faces" and sd2.data.folder("training") == "data/training"
    e = sd2.evaluation  # the paper's protocols: DreamBench 30 x 25 prompts x 4 images, faces 7 x 23 x 10
    sizes = [(e.subjects_of(d), e.prompts_of(d), e.images_of(d)) for d in ("object", "face")]
    assert sizes == [(30, 25, 4), (7, 23, 10)]
    mini = load_params(project_root / "params.yaml")
    assert mini.data.train == mini.data.evaluation == "world"
    assert mini.teacher.clip_threshold is None  # mini calibrates its thresholds on null pairs


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.update(seeds=[]), r"'seeds' must be a non-empty list of distinct seeds"),
        (lambda r: r.update(seeds=[0, 0]), r"'seeds' must be a non-empty list of distinct seeds"),
        (lambda r: r.update(seeds=[1, 2]), r"'guidance.seed' \(0\) must be one of the training seeds \[1, 2\]"),
        (lambda r: r["variants"]["both"].update(assistant="msee"), r"'variants.both.assistant' names 'msee'"),
        (lambda r: r["assistants"]["mse"].update(generator="huge"), r"'assistants.mse.generator' names 'huge'"),
        (lambda r: r["fidelity"].update(variant="all"), r"'fidelity.variant' names 'all'"),
        (
            lambda r: r["evaluation"].update(prompts={"object": 25}),
            r"evaluation.prompts must be one count or one per domain \(object, face\)",
        ),
        (
            lambda r: r["evaluation"].update(images_per_prompt={"object": 4, "face": 0}),
            r"evaluation.images_per_prompt.face must be a whole number of at least 1, got 0",
        ),
        (
            lambda r: r["variants"]["clip_small_dino_large"].update(assistant="mse"),
            r"G 'clip_small' reads CLIP 'clip_small', but assistant 'mse' predicts embeddings of CLIP 'clip'",
        ),
    ],
)
def test_names_that_point_elsewhere_must_exist_and_c_hat_must_live_where_g_reads(raw, edit, message):
    edit(raw)
    with pytest.raises(ParamsError, match=message):
        params_from_dict(raw)


def test_finetuned_generators_read_their_starts_encoders_and_are_found_with_the_others(raw):
    """Table 3's self-distillation Gs start from G `main` (paper 3.3), read its encoders, and are
    looked up where every G is, so variants, the pipeline and the tables need not know the difference."""
    raw["finetuned"].update(small_union={"init": "clip_small", "data": "union", "steps": 3})
    raw["variants"].update(small_union={"generator": "small_union", "guidance": "both", "assistant": "mse_clip_small"})
    params = params_from_dict(raw)
    union = params.generators["union"]
    assert (union.init, union.data, union.steps) == ("main", "union", raw["finetuned"]["union"]["steps"])
    assert (union.clip, union.dino) == ("clip", "dino")
    small = params.generators["small_union"]
    assert (small.clip, small.dino, small.steps) == ("clip_small", "dino", 3)  # its start's encoders
    assert params.generators["main"].init is None and params.generators["main"].steps is None
    assert params.generator_stage("union") == "finetune_generator@union"
    assert params.generator_stage("main") == "train_generator@main"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda r: r["finetuned"]["union"].update(init="huge"),
            r"'finetuned.union.init' names 'huge', not a key of 'generators'",
        ),
        (lambda r: r["finetuned"]["union"].update(init="selfdistill"), r"'finetuned.union.init' names 'selfdistill'"),
        (lambda r: r["finetuned"]["union"].update(steps=0), r"'finetuned.union.steps' must be at least 1"),
        (
            lambda r: r["finetuned"].update(main={"init": "main", "data": "teacher", "steps": 5}),
            r"'finetuned.main' is also a key of 'generators'",
        ),
        (lambda r: r["generators"]["human"].update(init="main"), r"'generators.human' sets init or steps.*'finetuned'"),
        (lambda r: r["finetuned"]["union"].pop("steps"), r"missing key 'finetuned.union.steps'"),
    ],
)
def test_a_finetuned_generator_starts_from_a_generator_trained_from_the_base_model(raw, edit, message):
    edit(raw)
    with pytest.raises(ParamsError, match=message):
        params_from_dict(raw)
