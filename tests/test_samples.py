"""Samples in DreamBench++'s layout (issue 13, item 3): CAFE writes them, and any method's folder scores."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from cafe_core.benchmarks.samples import read_samples, score_samples, write_samples
from cafe_core.testing import tiny_clip_encoder, tiny_dino_encoder, tiny_face_embedder


def photo(seed: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


@pytest.fixture
def encoders():
    return tiny_clip_encoder(["a", "dog", "on", "the", "beach", "ball"]), tiny_dino_encoder()


def test_written_samples_read_back_in_the_layout(tmp_path):
    folder = write_samples(
        tmp_path / "samples/cafe",
        [("dog", 0, 0, photo(0), photo(1), "a dog on the beach"), ("dog", 1, 0, photo(0), photo(2), "a dog")],
    )
    assert (folder / "src_image/dog/000_0.png").is_file() and (folder / "text/dog/001_0.txt").is_file()
    samples = read_samples(folder)
    assert [s.key for s in samples] == ["dog/000_0", "dog/001_0"] and samples[0].text == "a dog on the beach"
    assert samples[0].subject == "dog"


def test_scores_are_per_image_against_the_one_conditioning_photo(tmp_path, encoders):
    clip, dino = encoders
    folder = write_samples(
        tmp_path / "cafe",
        [("dog", 0, 0, photo(0), photo(0), "a dog"), ("ball", 0, 0, photo(3), photo(4), "a ball on the beach")],
    )
    summary = score_samples(folder, clip, dino)
    rows = [json.loads(line) for line in (folder / "scores.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == ["ball/000_0", "dog/000_0"]
    dog = rows[1]
    assert dog["DINO"] == pytest.approx(1.0, abs=1e-5) and dog["CLIP-I"] == pytest.approx(1.0, abs=1e-5)
    assert rows[0]["DINO"] < 1.0
    assert summary["images"] == 2 and summary["subjects"] == 2
    assert summary["CLIP-T"] == pytest.approx(np.mean([r["CLIP-T"] for r in rows]))
    assert summary["per_subject"]["dog"]["DINO"] == pytest.approx(dog["DINO"])
    assert json.loads((folder / "summary.json").read_text()) == summary


def test_a_peers_folder_scores_whatever_its_file_types_sizes_and_names(tmp_path, encoders):
    """Another method's outputs: JPEG, other sizes, its own names; the layout is all that is asked."""
    clip, dino = encoders
    peer = tmp_path / "samples/ip_adapter"
    for tree in ("src_image", "tgt_image"):
        (peer / tree / "backpack").mkdir(parents=True)
    Image.fromarray(photo(5, 48)).save(peer / "src_image/backpack/jungle.jpg")
    Image.fromarray(photo(6, 64)).save(peer / "tgt_image/backpack/jungle.jpg")
    (peer / "text/backpack").mkdir(parents=True)
    (peer / "text/backpack/jungle.txt").write_text("a backpack in the jungle\n")
    summary = score_samples(peer, clip, dino)
    assert summary["images"] == 1 and -1.0 <= summary["CLIP-T"] <= 1.0


def test_faces_get_id_against_their_conditioning_photo(tmp_path, encoders):
    """The faces protocol's ID: for CAFE's `face-` subjects, or a peer's faces folder throughout."""
    clip, dino = encoders
    face = tiny_face_embedder()
    items = [("face-ada", 0, 0, photo(0), photo(0), "a person"), ("object-dog", 0, 0, photo(1), photo(2), "a dog")]
    folder = write_samples(tmp_path / "cafe", items)
    summary = score_samples(folder, clip, dino, face=face)
    rows = {r["subject"]: r for r in map(json.loads, (folder / "scores.jsonl").read_text().splitlines())}
    assert rows["face-ada"]["ID"] == pytest.approx(1.0, abs=1e-5) and "ID" not in rows["object-dog"]
    assert summary["ID"] == pytest.approx(rows["face-ada"]["ID"]) and "ID" not in summary["per_subject"]["object-dog"]
    everyone = score_samples(folder, clip, dino, face=face, faces=True)
    assert everyone["per_subject"]["object-dog"]["ID"] < 1.0
    assert "ID" not in score_samples(folder, clip, dino)  # no face embedder: no ID


def test_a_folder_out_of_layout_is_refused_with_what_is_missing(tmp_path):
    folder = write_samples(tmp_path / "cafe", [("dog", 0, 0, photo(0), photo(1), "a dog")])
    (folder / "text/dog/000_0.txt").unlink()
    with pytest.raises(ValueError, match=r"lack their src_image, tgt_image or text file.*dog/000_0"):
        read_samples(folder)
    shutil.rmtree(folder / "text")
    with pytest.raises(FileNotFoundError, match="is not a samples folder"):
        read_samples(folder)


def test_cafe_score_uses_the_profiles_evaluation_encoders(tmp_path, tiny_sd2_hub, monkeypatch, capsys, project_root):
    from cafe_core.cli import main

    monkeypatch.setenv("HF_HUB_CACHE", str(tiny_sd2_hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    shutil.copy(project_root / "params.yaml", tmp_path / "params.yaml")
    folder = write_samples(tmp_path / "samples/cafe", [("dog", 0, 0, photo(0, 64), photo(1, 64), "a dog")])
    assert main(["--root", str(tmp_path), "--profile", "sd2", "--device", "cpu", "score", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "1 images of 1 subjects" in out and (folder / "scores.jsonl").is_file() and " ID " not in out
    assert main(["--root", str(tmp_path), "--profile", "sd2", "--device", "cpu", "score", "--faces", str(folder)]) == 0
    assert "ID " in capsys.readouterr().out  # the profile's face-identity model (ArcFace, ONNX)
    assert main(["--root", str(tmp_path), "--profile", "sd2", "--device", "cpu", "score", str(tmp_path)]) == 2
    assert "is not a samples folder" in capsys.readouterr().err
