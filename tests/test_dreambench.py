"""The DreamBench protocol: the real dataset's reader, the metrics on tiny encoders, tables, mini cases."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cafe_core.benchmarks.dreambench import PROMPTS_FILE, DreamBench, cafe_request, dreambench_root, load_dreambench
from cafe_core.benchmarks.metrics import clip_i_similarity, clip_t_similarity, dino_similarity, identity_similarity
from cafe_core.benchmarks.tables import ProtocolRow, csv_columns, write_table
from cafe_core.models.encoders import ClipEncoder, DinoEncoder
from cafe_core.testing import tiny_clip_encoder, tiny_dino_encoder, tiny_face_embedder
from cafe_core.world import World
from cafe_core.world.cases import mini_eval_cases

IMAGE = 32


@pytest.fixture(scope="module")
def bench(dreambench: Path) -> DreamBench:
    return load_dreambench(dreambench)


@pytest.fixture(scope="module")
def clip() -> ClipEncoder:
    return tiny_clip_encoder(["a", "dog", "cat", "in", "the", "jungle", "on", "beach", "red"], image_size=IMAGE)


@pytest.fixture(scope="module")
def dino() -> DinoEncoder:
    return tiny_dino_encoder(image_size=IMAGE)


def _smooth_images(n: int, seed: int) -> np.ndarray:
    """Photo-like uint8 (n, H, W, 3) images: a random colour gradient each, unlike uniform noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, IMAGE, dtype=np.float32)
    low, high = rng.uniform(0, 1, (2, n, 1, 1, 3)).astype(np.float32)
    images = low + (high - low) * ramp[None, :, None, None]
    return (np.broadcast_to(images, (n, IMAGE, IMAGE, 3)) * 255).astype(np.uint8)


def _noise(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, IMAGE, IMAGE, 3), dtype=np.uint8)


# --- reader ---------------------------------------------------------------------------------------


def test_reads_the_published_subjects_and_split(bench: DreamBench) -> None:
    assert len(bench.subjects) == 30
    names = [s.name for s in bench.subjects]
    assert names == sorted(names) and names[0] == "backpack"
    live = [s for s in bench.subjects if s.live]
    assert len(live) == 9 and {s.cls for s in live} == {"cat", "dog"}
    assert len(bench.subjects) - len(live) == 21
    assert bench.subject("grey_sloth_plushie").cls == "stuffed animal"
    assert sum(len(s.images) for s in bench.subjects) == 158
    assert all(path.is_file() and path.parent.name == s.name for s in bench.subjects for path in s.images)


def test_prompts_drop_the_unique_token(bench: DreamBench) -> None:
    dog, backpack = bench.subject("dog"), bench.subject("backpack")
    for subject in bench.subjects:
        prompts = bench.prompts(subject)
        assert len(prompts) == len(set(prompts)) == 25
        assert all(subject.cls in p and "{" not in p for p in prompts)
    assert bench.prompts(dog)[0] == "a dog in the jungle"
    assert "a dog wearing a santa hat" in bench.prompts(dog)  # live prompts for pets
    assert "a backpack floating on top of water" in bench.prompts(backpack)  # object prompts for objects
    assert bench.prompts("backpack")[-1] == "a cube shaped backpack"


def test_cafe_prompts_use_the_papers_two_forms(bench: DreamBench) -> None:
    rng = np.random.default_rng(0)
    per_subject = {subject: bench.cafe_prompts(subject, rng) for subject in bench.subjects}
    prompts = [p for subject_prompts in per_subject.values() for p in subject_prompts]
    assert len(prompts) == 750
    interrogative = [p.startswith("Can you generate an image for ") and p.endswith("?") for p in prompts]
    declarative = [p.startswith("Generate an image for ") and p.endswith(".") for p in prompts]
    assert all(i != d for i, d in zip(interrogative, declarative, strict=True))  # exactly one form each
    assert 0 < sum(interrogative) < len(prompts)
    assert all(" this " in p for p in prompts)
    assert all(subject.cls in p for subject, subject_prompts in per_subject.items() for p in subject_prompts)
    assert bench.cafe_prompts("dog", np.random.default_rng(1)) == bench.cafe_prompts("dog", np.random.default_rng(1))


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("a {0} {1} on the beach", "this dog on the beach"),
        ("a {0} {1} wearing a red hat", "this dog wearing a red hat"),
        ("a red {0} {1}", "a red version of this dog"),
        ("a cube shaped {0} {1}", "a cube shaped version of this dog"),
    ],
)
def test_cafe_request_rule(template: str, expected: str) -> None:
    assert cafe_request(template, "dog") == expected


def test_photos_load_as_rgb(bench: DreamBench) -> None:
    photos = bench.subject("dog").load_images()
    assert len(photos) == len(bench.subject("dog").images) and all(p.mode == "RGB" for p in photos)


def test_root_from_env_and_project(
    dreambench: Path, project_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CAFE_DREAMBENCH", raising=False)
    assert dreambench_root(project_root) == dreambench_root() == dreambench.resolve()
    monkeypatch.setenv("CAFE_DREAMBENCH", str(dreambench))
    assert dreambench_root(tmp_path) == dreambench.resolve()  # the environment wins over the project layout


def test_missing_root_names_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAFE_DREAMBENCH", raising=False)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "shared" / "dreambench"))):
        dreambench_root(tmp_path / "project")
    monkeypatch.setenv("CAFE_DREAMBENCH", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"nowhere.*CAFE_DREAMBENCH"):
        dreambench_root()
    with pytest.raises(FileNotFoundError, match=PROMPTS_FILE):
        load_dreambench(tmp_path)


def test_missing_subject_folder_is_named(dreambench: Path, tmp_path: Path) -> None:
    shutil.copy(dreambench / PROMPTS_FILE, tmp_path / PROMPTS_FILE)
    with pytest.raises(FileNotFoundError, match="backpack"):
        load_dreambench(tmp_path)


# --- metrics --------------------------------------------------------------------------------------


def test_image_metrics_prefer_the_same_subject(clip: ClipEncoder, dino: DinoEncoder) -> None:
    reference, other = _smooth_images(2, seed=0)[:, None]
    noise = _noise(1, seed=1)
    face = tiny_face_embedder(image_size=IMAGE)
    for metric, encoder in ((dino_similarity, dino), (clip_i_similarity, clip), (identity_similarity, face)):
        same = metric(encoder, reference, reference)
        assert same == pytest.approx(1.0, abs=1e-5)
        assert same > metric(encoder, other, reference) and same > metric(encoder, noise, reference)


def test_image_metrics_average_every_generated_reference_pair(dino: DinoEncoder) -> None:
    generated, references = _smooth_images(4, seed=2), _noise(3, seed=3)
    g, r = dino.cls_embeds(generated, normalize=True), dino.cls_embeds(references, normalize=True)
    expected = np.mean([[torch.dot(a, b).item() for b in r] for a in g])
    assert dino_similarity(dino, generated, references, batch_size=2) == pytest.approx(expected, abs=1e-5)


def test_metrics_accept_pil_lists_and_photos_of_any_size(dino: DinoEncoder, bench: DreamBench) -> None:
    generated = _smooth_images(2, seed=4)
    as_pil = [Image.fromarray(image) for image in generated]
    references = bench.subject("dog").load_images()  # real photos, larger and of different sizes
    value = dino_similarity(dino, generated, references)
    assert isinstance(value, float)
    assert dino_similarity(dino, as_pil, references) == pytest.approx(value, abs=1e-6)


def test_clip_t_pairs_each_image_with_its_own_prompt(clip: ClipEncoder) -> None:
    generated = _smooth_images(2, seed=5)
    prompts = ["a dog in the jungle", "a red cat on the beach"]
    images, texts = clip.image_embeds(generated, normalize=True), clip.text_embeds(prompts, normalize=True)
    expected = (images * texts).sum(-1).mean().item()
    assert clip_t_similarity(clip, generated, prompts, batch_size=1) == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError, match="one prompt per generated image"):
        clip_t_similarity(clip, generated, prompts[:1])


# --- tables ---------------------------------------------------------------------------------------


def test_row_dict_uses_the_table_columns() -> None:
    row = ProtocolRow("cafe", "object", DINO=0.5, CLIP_I=0.25, CLIP_T=0.125, context=0.75, ci95={"DINO": 0.1}, seeds=3)
    assert row.scores() == {
        "DINO": 0.5,
        "CLIP-I": 0.25,
        "CLIP-T": 0.125,
        "ID": None,
        "attributes": None,
        "context": 0.75,
    }
    assert list(row.to_dict()) == list(csv_columns())
    assert row.to_dict()["DINO_ci95"] == 0.1 and row.to_dict()["CLIP-I_ci95"] is None and row.to_dict()["seeds"] == 3


def test_write_table_formats_and_leaves_blanks(tmp_path: Path) -> None:
    rows = [ProtocolRow("cafe", "object", 0.61234, 0.7, 0.29876), ProtocolRow("clip_only", "face", CLIP_T=0.3, ID=0.1)]
    csv_path, md_path = write_table(rows, tmp_path / "results" / "ablation")
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("variant,domain,DINO,CLIP-I,CLIP-T,ID,attributes,context,DINO_ci95,")
    assert lines[1:] == ["cafe,object,0.612,0.700,0.299,,,,,,,,,,", "clip_only,face,,,0.300,0.100,,,,,,,,,"]
    assert csv.DictReader(lines).fieldnames == list(csv_columns())
    md = md_path.read_text().splitlines()
    assert md[0] == "| variant | domain | DINO | CLIP-I | CLIP-T | ID | attributes | context |"
    assert md[3] == "| clip_only | face |  |  | 0.300 | 0.100 |  |  |"
    write_table(rows[:1], csv_path.parent)  # rewriting replaces, and leaves no temporary file behind
    assert len(csv_path.read_text().splitlines()) == 2
    assert sorted(p.name for p in csv_path.parent.iterdir()) == ["table.csv", "table.md"]


def test_a_table_with_intervals_shows_them_with_its_seeds_and_verdicts(tmp_path: Path) -> None:
    rows = [ProtocolRow("both", "face", CLIP_T=0.3, ID=0.25, ci95={"CLIP-T": 0.02, "ID": 0.05}, seeds=3)]
    verdict = {"claim": "both beats clip_only", "metric": "ID", "domain": "face", "difference": 0.1}
    csv_path, md_path = write_table(rows, tmp_path, [{**verdict, "ci95": [0.04, 0.16], "verdict": "holds"}])
    md = md_path.read_text()
    assert "| both | face |  |  | 0.300 ± 0.020 | 0.250 ± 0.050 |  |  |" in md
    assert "Mean over 3 training seeds" in md
    assert "| both beats clip_only | ID | face | +0.100 | [+0.040, +0.160] | holds |" in md
    row = next(csv.DictReader(csv_path.read_text().splitlines()))
    assert (row["ID"], row["ID_ci95"], row["seeds"]) == ("0.250", "0.050", "3")


def test_controls_are_listed_apart_from_the_papers_claims(tmp_path: Path) -> None:
    rows = [ProtocolRow("both", "face", CLIP_T=0.3, ID=0.25, ci95={"CLIP-T": 0.02, "ID": 0.05}, seeds=3)]
    judged = {"metric": "ID", "domain": "face", "difference": 0.1, "ci95": [0.04, 0.16], "verdict": "holds"}
    claim, control = {**judged, "claim": "D_union beats D_auto"}, {**judged, "claim": "union beats continued"}
    md = write_table(rows, tmp_path, [claim], notes=["", "a note"], controls=[control])[1].read_text().splitlines()
    heading = md.index("| control (not a claim of the paper) | metric | domain | difference | 95% interval | verdict |")
    assert md.index("| D_union beats D_auto | ID | face | +0.100 | [+0.040, +0.160] | holds |") < heading
    assert md[heading + 2] == "| union beats continued | ID | face | +0.100 | [+0.040, +0.160] | holds |"
    assert md[-1] == "a note"


# --- CAFE-mini cases ------------------------------------------------------------------------------


def test_mini_cases_use_held_out_subjects(world: World) -> None:
    cases = mini_eval_cases(world, "object", n_subjects=3, n_prompts=4, seed=0, n_references=3)
    assert len(cases) == 3 and all(
        case.key.split == "eval" and case.domain == case.key.domain == "object" for case in cases
    )
    size = world.config.image_size
    for case in cases:
        assert case.reference_images.shape == (3, size, size, 3) and case.reference_images.dtype == np.uint8
        assert len({image.tobytes() for image in case.reference_images}) == 3  # distinct render seeds
        assert np.array_equal(case.input_image, case.reference_images[0])
        assert [p.key for p in case.prompts] == [p.key for p in cases[0].prompts]
        assert case.subject == case.key.name
        for prompt, cafe, label, context in case.prompts:
            assert prompt == world.prompt(case.key, context)
            assert label == context.phrase.format("subject")
            assert case.key.cls in cafe and "this" in cafe and cafe.endswith(("?", "."))


def test_mini_cases_are_seeded(world: World) -> None:
    first = mini_eval_cases(world, "face", n_subjects=2, n_prompts=3, seed=7, n_references=2)
    again = mini_eval_cases(world, "face", n_subjects=2, n_prompts=3, seed=7, n_references=2)
    assert [c.subject for c in first] == [c.subject for c in again]
    assert [c.prompts for c in first] == [c.prompts for c in again]
    assert all(np.array_equal(a.reference_images, b.reference_images) for a, b in zip(first, again, strict=True))
    full = mini_eval_cases(world, "face", n_subjects=1, n_prompts=len(world.contexts("face")), seed=0)
    assert [p.key for p in full[0].prompts] == world.contexts("face")
    with pytest.raises(ValueError, match="n_subjects"):
        mini_eval_cases(world, "face", n_subjects=10_000, n_prompts=1, seed=0)
