"""The `cafe` command: chat and sessions, the fast path, exit status 2 for bad input and 3 for missing models."""

import json
import shutil
from pathlib import Path

import pytest

from cafe_core import cli
from cafe_core.world import make_world

pytestmark = pytest.mark.slow  # end-to-end stages at tiny sizes


@pytest.fixture(scope="module")
def cli_root(assistant_project, tmp_path_factory):
    """The tiny project with a params.yaml, as `cafe` finds it."""
    import yaml

    from helpers import tiny_raw

    _, root, _ = assistant_project
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_raw()))
    photos = tmp_path_factory.mktemp("photos")
    from PIL import Image

    params = assistant_project[0]
    world = make_world(params)
    Image.fromarray(world.render(world.subjects("object", "eval")[0], None, seed=1).image).save(photos / "ball.png")
    Image.fromarray(world.render(world.subjects("face", "eval")[0], None, seed=1).image).save(photos / "face.png")
    Image.fromarray(world.render(world.subjects("object", "eval")[1], world.contexts("object")[0], seed=2).image).save(
        photos / "ref.png"
    )
    (photos / "notes.png").write_text("not an image")
    return root, photos


def test_cli_chat_prints_the_response_and_writes_the_image(cli_root, tmp_path, capsys):
    root, photos = cli_root
    out = tmp_path / "out.png"
    code = cli.main(
        [
            "--root",
            str(root),
            "--device",
            "cpu",
            "chat",
            "--image",
            str(photos / "ball.png"),
            "--out",
            str(out),
            "Draw this ball on the beach.",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.strip()  # the response
    assert f"wrote {out}" in captured.err and "llm" in captured.err
    from PIL import Image

    assert Image.open(out).size == (256, 256)  # 16 px, enlarged to be seen


def test_cli_session_keeps_the_chat_and_refuses_another_photo(cli_root, tmp_path, capsys):
    root, photos = cli_root
    session = tmp_path / "chat.json"
    base = [
        "--root",
        str(root),
        "--device",
        "cpu",
        "chat",
        "--image",
        str(photos / "ball.png"),
        "--session",
        str(session),
        "--out",
        str(tmp_path / "a.png"),
    ]
    assert cli.main(base + ["Draw this ball on the beach."]) == 0
    assert cli.main(base + ["Draw this ball in the snow."]) == 0
    assert len(json.loads(session.read_text())["history"]) == 4
    capsys.readouterr()
    other = [
        "--root",
        str(root),
        "chat",
        "--image",
        str(photos / "face.png"),
        "--session",
        str(session),
        "Draw this man smiling.",
    ]
    assert cli.main(other) == 2
    assert "another photo" in capsys.readouterr().err


def test_cli_generate_is_the_fast_path(cli_root, tmp_path):
    root, photos = cli_root
    out = tmp_path / "fast.png"
    args = [
        "--root",
        str(root),
        "--device",
        "cpu",
        "generate",
        "--image",
        str(photos / "ball.png"),
        "--reference",
        str(photos / "ref.png"),
    ]
    assert cli.main(args + ["--out", str(out), "--num-images", "2", "--native-size"]) == 0
    assert (tmp_path / "fast-0.png").is_file() and (tmp_path / "fast-1.png").is_file()


def test_cli_export_writes_the_system_that_from_pretrained_loads(cli_root, tmp_path, capsys):
    """`cafe export` writes one diffusers folder; loaded back, it answers and draws as the project's models do."""
    import numpy as np

    from cafe_core.pipeline import CafePipeline
    from cafe_core.workbench.config import load_params

    root, photos = cli_root
    out = tmp_path / "system"
    assert cli.main(["--root", str(root), "--device", "cpu", "export", str(out)]) == 0, capsys.readouterr().err
    assert "from_pretrained" in capsys.readouterr().out
    assert cli.main(["--root", str(root), "export", str(out)]) == cli.EXIT_INPUT  # not written over
    assert "not an empty folder" in capsys.readouterr().err
    ask = "Draw this ball on the beach."
    exported = CafePipeline.from_pretrained(out)
    project = CafePipeline.from_params(load_params(root / "params.yaml"), root, device="cpu")
    for pipe in (exported, project):
        pipe.set_progress_bar_config(disable=True)
    assert exported.sampling == project.sampling
    want, got = (p(str(photos / "ball.png"), ask, output_type="np") for p in (project, exported))
    assert got.response == want.response
    np.testing.assert_array_equal(got.images, want.images)


def test_cli_knobs_reach_the_drawing(cli_root, tmp_path):
    """--clip-scale, --dino-scale, --steps, --reference/--blend and a second --image each change the image."""
    import numpy as np
    from PIL import Image

    root, photos = cli_root
    base = ["--root", str(root), "--device", "cpu", "chat", "--image", str(photos / "ball.png"), "--native-size"]
    message = ["Draw this ball on the beach."]

    def draw(name: str, *extra: str) -> np.ndarray:
        out = tmp_path / f"{name}.png"
        assert cli.main(base + ["--out", str(out), *extra] + message) == 0
        return np.asarray(Image.open(out))

    plain = draw("plain")
    np.testing.assert_array_equal(draw("again"), plain)
    for name, extra in {
        "clip": ("--clip-scale", "0"),
        "dino": ("--dino-scale", "6"),
        "steps": ("--steps", "2"),
        "blend": ("--reference", str(photos / "ref.png"), "--blend", "0.8"),
        "photos": ("--image", str(photos / "face.png")),
    }.items():
        assert not np.array_equal(draw(name, *extra), plain), name


def test_cli_grid_writes_the_two_knobs_on_the_users_photo(cli_root, tmp_path, capsys):
    from PIL import Image

    root, photos = cli_root
    out = tmp_path / "grid.png"
    args = ["--root", str(root), "--device", "cpu", "grid", "--image", str(photos / "ball.png"), "--out", str(out)]
    assert cli.main(args + ["--clip-scales", "0,3", "--dino-scales", "1,3,5", "Draw this ball on the beach."]) == 0
    assert "rows s_c" in capsys.readouterr().err and Image.open(out).size[0] > 200
    assert cli.main(args + ["--reference", str(photos / "ref.png")]) == 0  # the fast path: no assistant
    assert cli.main(args) == 2
    assert "say what to draw" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(args + ["--clip-scales", "1,-2", "hi"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["chat", "--image", "{photos}/ball.png", "--blend", "0.5", "hi"], "--blend weighs --reference"),
        (
            ["chat", "--image", "{photos}/ball.png", "--reference", "{photos}/ref.png", "--blend", "1.5", "hi"],
            "--blend must each lie in [0, 1]",
        ),
        (["chat", "--image", "{photos}/ball.png", "--clip-scale", "-1", "hi"], "--clip-scale must be a number >= 0"),
        (["chat", "--image", "{photos}/ball.png", "--steps", "0", "hi"], "--steps must be >= 1"),
        (["chat", "--image", "{photos}/ball.png", "--scheduler", "euler", "hi"], "--scheduler must be one of"),
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


def test_photo_then_the_request_it_prints_is_a_chat_the_world_understands(cli_root, tmp_path, capsys):
    root, _ = cli_root
    photo = tmp_path / "star.png"
    assert cli.main(["--root", str(root), "photo", "--out", str(photo)]) == 0
    captured = capsys.readouterr()
    assert "held-out subject" in captured.err
    request = captured.out.strip().split('"')[1]
    code = cli.main(["--root", str(root), "chat", "--image", str(photo), "--out", str(tmp_path / "o.png"), request])
    captured = capsys.readouterr()
    assert code == 0 and "warning" not in captured.err  # every word of it is the world's


def test_words_the_world_does_not_know_are_named_with_its_subjects(cli_root, tmp_path, capsys):
    root, photos = cli_root
    args = ["--root", str(root), "chat", "--image", str(photos / "ball.png"), "--out", str(tmp_path / "o.png")]
    assert cli.main(args + ["Can you put this dog on the beach?"]) == 0  # a warning, not a refusal
    err = capsys.readouterr().err
    assert "does not know 'dog'" in err and "'beach'" not in err.split("warning:")[1].split(";")[0]
    assert "its subjects are:" in err and "ball" in err and "star" in err


def test_a_message_longer_than_the_assistants_context_is_refused_by_name(cli_root, tmp_path, capsys):
    root, photos = cli_root
    args = ["--root", str(root), "chat", "--image", str(photos / "ball.png"), "--out", str(tmp_path / "o.png")]
    assert cli.main(args + [" ".join(["Draw this ball on the beach."] * 700)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "context holds" in err and "max_position_embeddings" in err
    assert cli.main(args + ["   "]) == 2  # refused before any model loads
    assert "the message is empty" in capsys.readouterr().err


def test_a_truncated_checkpoint_names_the_file_and_how_to_restore_it(cli_root, tmp_path, capsys):
    root, photos = cli_root
    copy = tmp_path / "project"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("data", "runs", "mlflow*", "checkpoints"))
    shutil.copy(Path(cli.__file__).parents[1] / "dvc.lock", copy / "dvc.lock")  # what names each output's stage
    unet = next((copy / "models/generator/main/seed-0").rglob("diffusion_pytorch_model.safetensors"))
    unet.write_bytes(unet.read_bytes()[: unet.stat().st_size // 2])
    code = cli.main(
        ["--root", str(copy), "generate", "--image", str(photos / "ball.png"), "--reference", str(photos / "ref.png")]
    )
    err = capsys.readouterr().err
    assert code == 3 and err.count("\n") == 1, err
    assert str(unet) in err and "dvc checkout models/generator/main" in err and "dvc repro train_generator@main" in err
