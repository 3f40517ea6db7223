"""Chat to image end to end at tiny sizes: assistant training and lambda selection, CafePipeline,
the `cafe` command line, and table 4's evaluation (assistant variants and the true-embedding row)."""

import csv
import json
import shutil

import mlflow
import numpy as np
import pytest
import torch

from cafe_core import cli, stages
from cafe_core.pipeline import CafePipeline


@pytest.fixture(scope="module")
def project(tiny_world):
    params, root = tiny_world
    with pytest.MonkeyPatch.context() as mp:  # training runs land in a store the tests can read back
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow-assistant.db'}")
        stages.teacher_data(params, root)
        stages.train_generator_stage(params, root, "main")
        selection = stages.train_assistant_stage(params, root, "mse")
    return params, root, selection


@pytest.fixture(scope="module")
def pipe(project):
    params, root, _ = project
    return CafePipeline.from_params(params, root, assistant="mse", device="cpu")


@pytest.fixture(scope="module")
def photo(project):
    params, _, _ = project
    world = stages.make_world(params)
    return world.render(world.subjects("object", "eval")[0], None, seed=1).image


def test_lambda_is_chosen_on_validation_and_published(project):
    params, root, selection = project
    grid = {r["lambda"]: r for r in selection["grid"]}
    assert set(grid) == {0.5, 2.0}
    best = max(grid.values(), key=lambda r: r["score"])
    assert selection["chosen_lambda"] == best["lambda"]
    for r in grid.values():
        assert -1 <= r["score"] <= 1 and -1 <= r["cosine"] <= 1 and 0 <= r["context_accuracy"] <= 1
    out = stages.assistant_dir(root, "mse")
    chosen = out / "grid" / f"lambda-{best['lambda']:g}"
    assert (out / "assistant.safetensors").read_bytes() == (chosen / "assistant.safetensors").read_bytes()
    assert json.loads((out / "assistant_config.json").read_text())["lambda_"] == best["lambda"]
    assert json.loads((root / "results/assistant/mse.json").read_text())["chosen_lambda"] == best["lambda"]
    assert not any((out.parent / ".checkpoints").glob("mse-*"))  # finished members leave no checkpoints
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow-assistant.db'}")
    runs = mlflow.search_runs(experiment_names=["train_assistant"], output_format="list")
    assert {"mse-lambda-0.5", "mse-lambda-2"} <= {r.info.run_name for r in runs}
    assert all("val/score" in r.data.metrics for r in runs)


def test_rerun_trains_nothing(project, monkeypatch):
    params, root, selection = project

    def fail(*args, **kwargs):
        raise AssertionError("an up-to-date assistant was trained again")

    monkeypatch.setattr("cafe_core.train.train_assistant", fail)
    assert stages.train_assistant_stage(params, root, "mse")["chosen_lambda"] == selection["chosen_lambda"]


def test_chat_turn_returns_response_images_embedding_and_timings(pipe, photo):
    result = pipe.chat(photo, "Can you generate an image for this ball on the beach?", seed=3, num_images=2)
    assert isinstance(result.response, str) and result.response
    assert result.images.shape == (2, 16, 16, 3) and result.images.dtype == np.uint8
    assert result.embedding.shape == (pipe.assistant.config.clip_dim,) and torch.isfinite(result.embedding).all()
    parts = ("encoders", "llm", "diffusion")
    assert all(result.timings[p] > 0 for p in parts)
    assert result.timings["total"] >= sum(result.timings[p] for p in parts)
    assert result.history == [
        {"role": "user", "content": "Can you generate an image for this ball on the beach?"},
        {"role": "assistant", "content": result.response},
    ]
    again = pipe.chat(photo, "Can you generate an image for this ball on the beach?", seed=3, num_images=2)
    np.testing.assert_array_equal(result.images, again.images)


def test_multi_turn_keeps_the_photo_and_its_features(pipe, photo, monkeypatch):
    first = pipe.chat(photo, "Draw this ball on the beach.", seed=0)
    calls = []
    original = pipe.clip.patch_features
    monkeypatch.setattr(pipe.clip, "patch_features", lambda *a, **k: calls.append(1) or original(*a, **k))
    second = pipe.chat(photo, "Draw this ball in the snow.", first.history, seed=0)
    assert calls == []  # same photo: its features are reused
    assert [m["role"] for m in second.history] == ["user", "assistant", "user", "assistant"]
    prompt = pipe.assistant.build_prompt(second.history[:-1])
    assert prompt.count("<image>") == 1 and prompt.index("<image>") < prompt.index("beach") < prompt.index("snow")
    # The second turn's c_hat is read after the second request: a different prediction.
    assert not torch.allclose(first.embedding, second.embedding)


def test_chat_rejects_bad_input(pipe, photo):
    with pytest.raises(ValueError, match="non-empty"):
        pipe.chat(photo, "   ")
    with pytest.raises(ValueError, match="uint8"):
        pipe.chat(photo.astype(np.float32), "Draw this ball.")
    with pytest.raises(ValueError, match="end with the user"):
        pipe.respond([photo], [[{"role": "assistant", "content": "hi"}]])


def test_fast_path_draws_one_image_per_reference(pipe, photo, project):
    params, _, _ = project
    world = stages.make_world(params)
    refs = world.render_batch(world.subjects("object", "eval")[:3], world.contexts("object")[:3], [0, 1, 2])
    images, timings = pipe.generate(photo, refs, seed=0)
    assert images.shape == (3, 16, 16, 3) and timings["diffusion"] > 0
    one, _ = pipe.generate(photo, refs[0], seed=0)
    np.testing.assert_allclose(one[0], images[0], atol=2)  # same draw; batching may move a value by 1
    c_hat = pipe.chat(photo, "Draw this ball.").embedding
    blended, _ = pipe.generate(photo, refs[0], seed=0, c_hat=c_hat, blend=1.0)
    np.testing.assert_allclose(blended, one, atol=2)  # blend 1: the reference alone


def test_missing_models_name_the_stage_to_run(project, tmp_path):
    params, _, _ = project
    with pytest.raises(FileNotFoundError, match=r"dvc repro train_generator@main"):
        CafePipeline.from_params(params, tmp_path, device="cpu")
    with pytest.raises(KeyError, match="unknown assistant 'nope'"):
        CafePipeline.from_params(params, tmp_path, assistant="nope", device="cpu")


# ----------------------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def cli_root(project, tmp_path_factory):
    """The tiny project with a params.yaml, as `cafe` finds it."""
    import yaml
    from helpers import tiny_raw

    _, root, _ = project
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_raw()))
    photos = tmp_path_factory.mktemp("photos")
    from PIL import Image

    params = project[0]
    world = stages.make_world(params)
    Image.fromarray(world.render(world.subjects("object", "eval")[0], None, seed=1).image).save(photos / "ball.png")
    Image.fromarray(world.render(world.subjects("face", "eval")[0], None, seed=1).image).save(photos / "face.png")
    Image.fromarray(world.render(world.subjects("object", "eval")[1], world.contexts("object")[0], seed=2).image).save(photos / "ref.png")
    (photos / "notes.png").write_text("not an image")
    return root, photos


def test_cli_chat_prints_the_response_and_writes_the_image(cli_root, tmp_path, capsys):
    root, photos = cli_root
    out = tmp_path / "out.png"
    code = cli.main(["--root", str(root), "--device", "cpu", "chat", "--image", str(photos / "ball.png"), "--out", str(out), "Draw this ball on the beach."])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.strip()  # the response
    assert f"wrote {out}" in captured.err and "llm" in captured.err
    from PIL import Image

    assert Image.open(out).size == (256, 256)  # 16 px, enlarged to be seen


def test_cli_session_keeps_the_chat_and_refuses_another_photo(cli_root, tmp_path, capsys):
    root, photos = cli_root
    session = tmp_path / "chat.json"
    base = ["--root", str(root), "--device", "cpu", "chat", "--image", str(photos / "ball.png"), "--session", str(session), "--out", str(tmp_path / "a.png")]
    assert cli.main(base + ["Draw this ball on the beach."]) == 0
    assert cli.main(base + ["Draw this ball in the snow."]) == 0
    assert len(json.loads(session.read_text())["history"]) == 4
    capsys.readouterr()
    other = ["--root", str(root), "chat", "--image", str(photos / "face.png"), "--session", str(session), "Draw this man smiling."]
    assert cli.main(other) == 2
    assert "another photo" in capsys.readouterr().err


def test_cli_generate_is_the_fast_path(cli_root, tmp_path):
    root, photos = cli_root
    out = tmp_path / "fast.png"
    args = ["--root", str(root), "--device", "cpu", "generate", "--image", str(photos / "ball.png"), "--reference", str(photos / "ref.png")]
    assert cli.main(args + ["--out", str(out), "--num-images", "2", "--native-size"]) == 0
    assert (tmp_path / "fast-0.png").is_file() and (tmp_path / "fast-1.png").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["chat", "--image", "{photos}/missing.png", "hi"], "missing.png"),
        (["chat", "--image", "{photos}/notes.png", "hi"], "notes.png"),
        (["chat", "--image", "{photos}/ball.png", "--out", "x.jpg", "hi"], ".png"),
        (["generate", "--image", "{photos}/ball.png", "--reference", "{photos}/missing.png"], "missing.png"),
        (["chat", "--image", "{photos}/ball.png", "--assistant", "nope", "hi"], "unknown assistant"),
    ],
)
def test_cli_bad_input_exits_2_with_a_clear_message(cli_root, capsys, args, message):
    root, photos = cli_root
    code = cli.main(["--root", str(root)] + [a.format(photos=photos) for a in args])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("cafe: error:") and message in err


def test_cli_missing_models_exit_3_and_say_how_to_build_them(cli_root, tmp_path, capsys):
    root, photos = cli_root
    shutil.copy(root / "params.yaml", tmp_path / "params.yaml")
    code = cli.main(["--root", str(tmp_path), "chat", "--image", str(photos / "ball.png"), "hi"])
    assert code == 3
    err = capsys.readouterr().err
    assert "dvc repro train_generator@main" in err and "built, not downloaded" in err


# ----------------------------------------------------------------------------- table 4


def test_assistant_variants_quality_figures_and_table(project):
    params, root, _ = project
    stages.train_assistant_stage(params, root, "neg_cosine")
    for variant in ("mse", "neg_cosine", "gt_embedding", "real_images"):
        result = stages.evaluate_variant(params, root, variant)
        rows = {r["domain"]: r for r in result["rows"]}
        assert isinstance(rows["object"]["DINO"], float) and isinstance(rows["face"]["ID"], float)
    quality = json.loads((root / "results/variants/mse/quality.json").read_text())
    for domain in ("object", "face"):
        q = quality[domain]
        assert q["turns"] == params.evaluation.prompts * params.evaluation.images_per_prompt * 2
        assert -1 <= q["cosine"] <= 1
        for key in ("names_class_and_context", "image_matches_response", "image_matches_response_ceiling",
                    "ambiguous_valid_with_reason", "ambiguous_names_class", "second_turn_names_context"):
            assert 0 <= q[key] <= 1
        for key in ("second_turn_cosine", "same_request_alone_cosine", "second_turn_identity", "same_request_alone_identity"):
            assert -1 <= q[key] <= 1
    assert not (root / "results/variants/gt_embedding/quality.json").exists()
    rows = stages.ablation_table(params, root, "ablation_loss")
    with open(root / "results/ablation_loss/table.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["variant"] for r in table] == [r.variant for r in rows]
    assert [r["variant"] for r in table[::2]] == ["mse", "neg_cosine", "gt_embedding", "real_images"]
    mlflow.set_tracking_uri(stages.tracking.tracking_uri(root))
    runs = {r.info.run_name: r for r in mlflow.search_runs(experiment_names=["ablation_loss"], output_format="list")}
    assert runs["mse"].data.params["distance"] == "mse"
    assert "object/quality/cosine" in runs["mse"].data.metrics


def test_cafe_is_installed_as_a_command():
    import subprocess
    import sys
    from pathlib import Path

    cafe = Path(sys.executable).parent / "cafe"
    assert cafe.is_file(), "the `cafe` console script is missing: pyproject's [project.scripts] is not installed"
    done = subprocess.run([str(cafe), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "chat" in done.stdout and "generate" in done.stdout
    done = subprocess.run([str(cafe), "chat"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--image" in done.stderr
