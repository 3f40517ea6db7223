"""The `cafe` command refuses what it cannot do before loading any model, in one line with exit status 2."""

import pytest
import torch

from cafe_core import cli


def _run(capsys, *args: str) -> tuple[int, str]:
    code = cli.main(list(args))
    return code, capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_machine_without_it_is_refused_by_name(project_root, capsys):
    code, err = _run(capsys, "--root", str(project_root), "--device", "cuda", "photo")
    assert code == 2 and err.count("\n") == 1
    assert "--device cuda: this machine has no CUDA device" in err and "--device cpu" in err


def test_a_device_that_is_not_one_is_refused(project_root, capsys):
    code, err = _run(capsys, "--root", str(project_root), "--device", "gpu", "photo")
    assert code == 2 and "'gpu' is not a device" in err


def test_an_empty_message_is_refused_before_loading(project_root, tmp_path, capsys):
    code, err = _run(capsys, "--root", str(project_root), "chat", "--image", str(tmp_path / "x.png"), " \t ")
    assert code == 2 and err.count("\n") == 1 and "the message is empty" in err


def test_photo_writes_a_held_out_subject_and_a_request_for_it(project_root, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "face.png"
    code = cli.main(["--root", str(project_root), "photo", "--domain", "face", "--index", "1", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0 and Image.open(out).size == (256, 256)
    assert captured.out.startswith(f'cafe chat --image {out} "') and " this " in captured.out
    target = tmp_path / "target.png"
    assert cli.main(["--root", str(project_root), "photo", "--index", "1", "--target", "--out", str(target)]) == 0
    assert "the true image of" in capsys.readouterr().err
    code, err = _run(capsys, "--root", str(project_root), "photo", "--domain", "car")
    assert code == 2 and "car" in err
    code, err = _run(capsys, "--root", str(project_root), "photo", "--index", "999")
    assert code == 2 and "subject(s)" in err


def test_the_readmes_chat_example_is_the_first_held_out_subject_of_mini(project_root, tmp_path, capsys):
    """README (Chat) and the CLI's help show `cafe photo` then this request: it must name that subject."""
    assert cli.main(["--root", str(project_root), "photo", "--out", str(tmp_path / "photo.png")]) == 0
    captured = capsys.readouterr()
    assert "'red ball with a gold checker pattern'" in captured.err
    assert captured.out.strip().endswith('"Can you generate an image for this ball on the beach?"')
    readme = (project_root / "README.md").read_text()
    assert 'cafe chat --image photo.png "Can you generate an image for this ball on the beach?"' in readme
    assert "this ball on the beach" in cli.__doc__
