"""Tests for cafe_core.utils.images: every odd photo is either handled or named in a clear error."""

from __future__ import annotations

import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from cafe_core.utils.images import (
    MAX_PIXELS,
    MIN_SIDE,
    ImageLoadError,
    image_files,
    load_image,
    save_image,
    to_rgb,
    to_tensor,
)

DREAMBENCH = Path(os.environ.get("CAFE_DREAMBENCH_DIR", Path(__file__).resolve().parents[2] / "shared" / "dreambench"))
DREAMBENCH_PHOTOS = sorted(DREAMBENCH.glob("*/*.jpg"))
needs_dreambench = pytest.mark.skipif(not DREAMBENCH_PHOTOS, reason=f"DreamBench photos not found in {DREAMBENCH}")


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """Random RGB noise: it compresses badly, so files are big enough to truncate meaningfully."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A valid PNG signature and IHDR claiming ``width x height`` RGB, with no pixel data at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunks = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path


def truncate(source: Path, target: Path, fraction: float = 0.5) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def assert_load_error(path: Path, *fragments: str, **kwargs) -> ImageLoadError:
    with pytest.raises(ImageLoadError) as info:
        load_image(path, **kwargs)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message
    return info.value


# --- files that are not (usable) images -----------------------------------------------------------


def test_a_folders_images_are_its_photo_files_by_name(tmp_path: Path) -> None:
    """What a DreamBench subject or a faces folder counts as its photos: any case of suffix, in name
    order (the first is the input photo), never a subfolder or a note beside them."""
    for name in ("b.JPG", "a.png", "c.webp", "notes.txt", ".DS_Store"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "d.jpeg").mkdir()
    assert [p.name for p in image_files(tmp_path)] == ["a.png", "b.JPG", "c.webp"]


def test_missing_file_says_it_does_not_exist(tmp_path: Path) -> None:
    assert_load_error(tmp_path / "dog.jpg", "does not exist")


def test_directory_is_rejected(tmp_path: Path) -> None:
    assert_load_error(tmp_path, "directory")


def test_empty_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.touch()
    assert_load_error(path, "empty")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("notes.jpg", b"this is a text file, not a photo\n"),
        ("logo.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'),
        ("random.png", bytes(range(256)) * 4),
    ],
)
def test_non_image_file_is_rejected(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert_load_error(path, "not an image in a supported format", "JPEG")


def test_heic_gets_a_specific_message(tmp_path: Path) -> None:
    path = tmp_path / "IMG_0001.HEIC"
    path.write_bytes(struct.pack(">I", 24) + b"ftypheic" + b"\0\0\0\0" + b"mif1heic" + bytes(200))
    assert_load_error(path, "HEIC", "pillow-heif")


def test_format_outside_the_whitelist_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "photo.ppm"  # a format Pillow reads, but not one users upload photos in
    noise(16, 16).save(path)
    assert_load_error(path, "supported format")


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_file_is_an_error(tmp_path: Path, suffix: str) -> None:
    full = tmp_path / f"full{suffix}"
    noise(64, 64).save(full)
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    assert_load_error(truncate(full, tmp_path / f"cut{suffix}"), "truncated")


def test_error_pickles_and_is_a_value_error(tmp_path: Path) -> None:
    error = ImageLoadError(tmp_path / "x.jpg", "the file does not exist", "Check the path.")
    assert isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) and copy.path == error.path


# --- size guards ----------------------------------------------------------------------------------


def test_too_small_image_is_rejected_with_its_size(tmp_path: Path) -> None:
    path = tmp_path / "tiny.png"
    Image.new("RGB", (MIN_SIDE - 1, 100)).save(path)
    assert_load_error(path, f"{MIN_SIDE - 1}x100", str(MIN_SIDE))
    assert load_image(path, min_side=1).size == (MIN_SIDE - 1, 100)


def test_max_pixels_is_configurable(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    noise(40, 30).save(path)
    assert_load_error(path, "decompression bomb", "1,200", max_pixels=1_199)
    assert load_image(path, max_pixels=1_200).size == (40, 30)


@pytest.fixture
def decode_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every pixel decode, to prove bombs are rejected from the header alone."""
    calls: list[str] = []
    original = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile):
        calls.append(self.filename)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return calls


def test_header_only_bomb_is_rejected_without_decoding(tmp_path: Path, decode_calls: list[str]) -> None:
    side = 9000  # 81 M pixels: above MAX_PIXELS, below Pillow's own guard
    assert side * side > MAX_PIXELS
    assert_load_error(png_header_only(tmp_path / "bomb.png", side, side), "decompression bomb", "9000x9000")
    assert decode_calls == []
    noise(16, 16).save(tmp_path / "fine.png")
    load_image(tmp_path / "fine.png")
    assert set(decode_calls) == {str(tmp_path / "fine.png")}  # the spy does see real decodes


def test_huge_bomb_caught_by_pillow_guard_is_an_image_load_error(tmp_path: Path, decode_calls: list[str]) -> None:
    assert_load_error(png_header_only(tmp_path / "bomb.png", 100_000, 100_000), "too large")
    assert decode_calls == []


# --- modes ----------------------------------------------------------------------------------------


def saved_and_loaded(image: Image.Image, path: Path, **save_kwargs) -> Image.Image:
    image.save(path, **save_kwargs)
    loaded = load_image(path)
    assert loaded.mode == "RGB"
    return loaded


def test_greyscale_and_one_bit(tmp_path: Path) -> None:
    assert saved_and_loaded(Image.new("L", (8, 8), 77), tmp_path / "l.png").getpixel((0, 0)) == (77, 77, 77)
    one_bit = Image.new("1", (8, 8), 0)
    one_bit.putpixel((1, 1), 1)
    loaded = saved_and_loaded(one_bit, tmp_path / "1.png")
    assert loaded.getpixel((0, 0)) == (0, 0, 0) and loaded.getpixel((1, 1)) == (255, 255, 255)


def test_alpha_is_composited_on_white_not_dropped(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # transparent black: dropping alpha gives black
    rgba.putpixel((1, 1), (255, 0, 0, 128))
    loaded = saved_and_loaded(rgba, tmp_path / "rgba.png")
    assert loaded.getpixel((0, 0)) == (255, 255, 255)
    assert loaded.getpixel((1, 1)) == pytest.approx((255, 127, 127), abs=1)
    la = Image.new("LA", (8, 8), (0, 0))
    assert saved_and_loaded(la, tmp_path / "la.png").getpixel((0, 0)) == (255, 255, 255)


def test_palette_transparency_is_composited(tmp_path: Path) -> None:
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255])
    palette.putpixel((1, 1), 1)
    loaded = saved_and_loaded(palette, tmp_path / "p.png", transparency=0)
    assert loaded.getpixel((0, 0)) == (255, 255, 255)  # transparent red index
    assert loaded.getpixel((1, 1)) == (0, 0, 255)


def test_to_rgb_background_is_configurable() -> None:
    image = to_rgb(Image.new("RGBA", (2, 2), (0, 0, 0, 0)), background=(10, 20, 30))
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (10, 20, 30)


def test_to_rgb_returns_rgb_images_unchanged() -> None:
    image = Image.new("RGB", (2, 2))
    assert to_rgb(image) is image


def test_cmyk_jpeg_keeps_its_colours(tmp_path: Path) -> None:
    colour = (200, 30, 60)
    cmyk = Image.new("RGB", (32, 32), colour).convert("CMYK")
    loaded = saved_and_loaded(cmyk, tmp_path / "cmyk.jpg", quality=95)
    assert np.abs(np.asarray(loaded).astype(int) - colour).max() <= 6


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = [0, 257, 32768, 65535]
    row = np.repeat(np.array(values, dtype=np.uint16), MIN_SIDE)  # one MIN_SIDE-wide band per value
    Image.fromarray(np.tile(row, (MIN_SIDE, 1))).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as raw:
        assert raw.mode in ("I;16", "I")  # really stored and read as 16-bit
    loaded = load_image(tmp_path / "deep.png")
    assert [loaded.getpixel((i * MIN_SIDE, 0)) for i in range(4)] == [(0, 0, 0), (1, 1, 1), (128,) * 3, (255,) * 3]


@pytest.mark.parametrize("mode", ["I;16B", "I"])
def test_to_rgb_scales_other_sixteen_bit_layouts(mode: str) -> None:
    values = [0, 257, 32768, 65535]
    image = Image.new(mode, (4, 1))
    for x, value in enumerate(values):
        image.putpixel((x, 0), value)
    assert [to_rgb(image).getpixel((x, 0))[0] for x in range(4)] == [0, 1, 128, 255]


def test_float_mode_is_refused_rather_than_clipped() -> None:
    with pytest.raises(ValueError, match="mode 'F'"):
        to_rgb(Image.new("F", (2, 2), 0.5))


# --- orientation and frames -----------------------------------------------------------------------


@pytest.mark.parametrize(("orientation", "marker_at"), [(6, (19, 0)), (8, (0, 39))])
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int, marker_at: tuple[int, int]) -> None:
    stored = Image.new("RGB", (40, 20), (255, 255, 255))  # stored landscape, shot portrait
    stored.paste((255, 0, 0), (0, 0, 4, 4))  # red marker in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    loaded = saved_and_loaded(stored, tmp_path / f"rot{orientation}.jpg", exif=exif, quality=95)
    assert loaded.size == (20, 40)
    red, green, blue = loaded.getpixel(marker_at)
    assert red > 200 and green < 60 and blue < 60


def test_animated_gif_gives_its_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (16, 16), colour) for colour in [(255, 0, 0), (0, 0, 255)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(path) as raw:
        assert raw.n_frames == 2
    assert load_image(path).getpixel((8, 8)) == (255, 0, 0)


# --- real photos ----------------------------------------------------------------------------------


@needs_dreambench
def test_every_dreambench_photo_loads_as_rgb() -> None:
    for path in DREAMBENCH_PHOTOS:
        image = load_image(path)
        assert image.mode == "RGB" and min(image.size) >= MIN_SIDE, path
    assert len(DREAMBENCH_PHOTOS) >= 100


@needs_dreambench
@pytest.mark.parametrize("fraction", [0.5, 0.99])
def test_truncated_dreambench_photo_names_the_file(tmp_path: Path, fraction: float) -> None:
    source = DREAMBENCH_PHOTOS[0]
    assert_load_error(truncate(source, tmp_path / f"{source.parent.name}_{source.name}", fraction), "truncated")


# --- tensors --------------------------------------------------------------------------------------


def test_to_tensor_pil_array_and_tensor_agree() -> None:
    image = noise(12, 10)
    array = np.array(image)
    from_pil = to_tensor(image)
    assert from_pil.shape == (1, 3, 10, 12) and from_pil.dtype == torch.float32
    assert from_pil.min() >= 0 and from_pil.max() <= 1
    assert torch.equal(from_pil, to_tensor(array))
    assert torch.equal(from_pil, to_tensor(array[None]))
    assert torch.equal(from_pil, to_tensor(torch.from_numpy(array).permute(2, 0, 1)))
    assert torch.allclose(from_pil, to_tensor(from_pil))
    assert to_tensor([image, image]).shape == (2, 3, 10, 12)


def test_to_tensor_converts_modes_through_to_rgb() -> None:
    batch = to_tensor(Image.new("RGBA", (4, 4), (0, 0, 0, 0)))
    assert torch.equal(batch, torch.ones(1, 3, 4, 4))


def test_to_tensor_returns_a_new_tensor() -> None:
    source = torch.rand(1, 3, 4, 4)
    batch = to_tensor(source)
    batch.zero_()
    assert source.max() > 0


@pytest.mark.parametrize(("width", "height"), [(60, 20), (20, 60)])
def test_to_tensor_resizes_shorter_side_and_centre_crops(width: int, height: int) -> None:
    image = Image.new("RGB", (width, height), (0, 0, 255))
    image.paste((255, 0, 0), (width // 2 - 5, height // 2 - 5, width // 2 + 5, height // 2 + 5))
    batch = to_tensor(image, size=10)
    assert batch.shape == (1, 3, 10, 10)
    assert batch[0, 0, 5, 5] > 0.9 and batch[0, 2, 5, 5] < 0.1  # centre kept
    assert batch.min() >= 0 and batch.max() <= 1  # bicubic overshoot clamped


def test_to_tensor_batches_mixed_sizes_only_with_size() -> None:
    images = [noise(30, 20), noise(16, 40, seed=1)]
    with pytest.raises(ValueError, match="size="):
        to_tensor(images)
    assert to_tensor(images, size=16).shape == (2, 3, 16, 16)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 4), np.uint8),
        np.zeros((4, 4, 4), np.uint8),
        torch.zeros(4, 4, 3),
        np.full((4, 4, 3), 2.0, np.float32),  # looks like [0, 255] or [-1, 1] data
        [],
    ],
)
def test_to_tensor_rejects_ambiguous_input(bad) -> None:
    with pytest.raises(ValueError):
        to_tensor(bad)


def test_to_tensor_rejects_other_dtypes() -> None:
    with pytest.raises(TypeError):
        to_tensor(np.zeros((4, 4, 3), np.uint16))


# --- saving ---------------------------------------------------------------------------------------


def test_save_image_round_trips_and_leaves_no_temp_files(tmp_path: Path) -> None:
    image = noise(9, 7)
    path = save_image(image, tmp_path / "out" / "sample.png")
    assert path == tmp_path / "out" / "sample.png"
    assert [p.name for p in path.parent.iterdir()] == ["sample.png"]
    with Image.open(path) as saved:
        assert saved.format == "PNG"
        assert np.array_equal(np.asarray(saved), np.asarray(image))


def test_save_image_accepts_to_tensor_output(tmp_path: Path) -> None:
    image = noise(9, 7)
    path = save_image(to_tensor(image), tmp_path / "from_tensor.png")
    assert np.array_equal(np.asarray(load_image(path, min_side=1)), np.asarray(image))


def test_failed_save_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_image(Image.new("RGB", (8, 8), (1, 2, 3)), tmp_path / "sample.png")
    before = path.read_bytes()

    def crash(self, fp, format=None, **params):
        fp.write(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_image(Image.new("RGB", (8, 8)), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["sample.png"]


def test_save_image_requires_png_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.png"):
        save_image(Image.new("RGB", (8, 8)), tmp_path / "sample.jpg")
