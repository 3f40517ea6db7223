"""Image I/O for the assistant: load a user's photo safely, convert it, save outputs.

Users hand the assistant one photo of their subject, from any camera or editor.
:func:`load_image` either returns an upright 8-bit RGB image or raises
:class:`ImageLoadError` whose message names the file, says what is wrong and
what to do about it. :func:`to_tensor` turns images into the model's
``float32 (B, 3, H, W)`` in ``[0, 1]``; :func:`save_image` writes outputs
atomically so resumable stages can trust that an existing file is complete.
"""

from __future__ import annotations

import logging
import os
import struct
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "MIN_SIDE",
    "SUPPORTED_FORMATS",
    "ImageLoadError",
    "image_files",
    "load_image",
    "save_image",
    "to_rgb",
    "to_tensor",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp")
"""The file suffixes (lower case) that a folder of photos or samples is read for."""

MAX_PIXELS: int = 64 * 1024 * 1024
"""Largest ``width * height`` that :func:`load_image` decodes by default.

Checked against the header before any pixel is decoded, so a tiny file that
claims a huge canvas (a decompression bomb) cannot exhaust memory. It sits below
Pillow's own global guard (``Image.MAX_IMAGE_PIXELS``), which still applies."""

MIN_SIDE: int = 8
"""Smallest accepted width and height: anything smaller holds no usable subject."""

SUPPORTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF", "HEIF")
"""Pillow format names :func:`load_image` will try, in order.

A whitelist of photo formats keeps untrusted uploads away from rarely used
parsers (EPS, for one, hands the file to Ghostscript). JPEG includes MPO, the
multi-picture JPEG of many phones. Formats this Pillow build lacks are skipped:
HEIF, for one, only works once a plugin such as ``pillow-heif`` is registered."""

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I;16"})
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"})
# What Pillow's parsers and decoders raise on malformed data (Image.open itself
# catches most of these while probing formats).
_CORRUPT_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error)


class ImageLoadError(ValueError):
    """A user image cannot be used; the message names the file, the problem and a fix."""

    def __init__(self, path: str | os.PathLike[str], problem: str, hint: str = "") -> None:
        # Pass everything to the base class so the error survives pickling
        # (DataLoader workers and multiprocessing send exceptions across processes).
        super().__init__(os.fspath(path), problem, hint)
        self.path = os.fspath(path)
        self.problem = problem
        self.hint = hint

    def __str__(self) -> str:
        message = f"Cannot load image '{self.path}': {self.problem}."
        return f"{message} {self.hint}" if self.hint else message


def image_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files directly in ``folder`` (:data:`IMAGE_SUFFIXES`, any case), sorted by name;
    subfolders and other files are skipped."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = MAX_PIXELS,
    min_side: int = MIN_SIDE,
) -> Image.Image:
    """Load a user's photo as an upright 8-bit RGB image.

    EXIF orientation is applied (phones store portraits sideways), multi-frame
    files give their first frame, and every mode goes through :func:`to_rgb`.
    Size limits are checked from the header, before any pixel is decoded.
    Truncated files are errors: a half-grey photo would silently poison a
    subject embedding, so ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left alone.

    Raises:
        ImageLoadError: the file is missing, not a supported image, truncated or
            corrupt, too small, or larger than ``max_pixels``.
    """
    path = Path(path)
    _check_is_file(path)
    try:
        with Image.open(path, formats=_available_formats()) as opened:
            _check_size(path, opened.size, max_pixels=max_pixels, min_side=min_side)
            opened.load()  # decodes the first frame only
            frames = getattr(opened, "n_frames", 1)
            logger.debug("Loaded %s: %s %s %dx%d, %d frame(s)", path, opened.format, opened.mode, *opened.size, frames)
            image = _upright(opened, path)
    except ImageLoadError:
        raise
    except UnidentifiedImageError as exc:
        raise _unsupported_format_error(path) from exc
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(
            path,
            f"it is too large to decode safely ({exc})",
            "Downscale the photo, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file.",
        ) from exc
    except _CORRUPT_ERRORS as exc:
        raise ImageLoadError(
            path,
            f"the file is truncated or corrupt ({exc})",
            "Re-copy, re-download or re-export the photo.",
        ) from exc
    try:
        return to_rgb(image)
    except ValueError as exc:
        raise ImageLoadError(
            path, f"its pixel mode cannot be converted to RGB ({exc})", "Export it as an 8-bit RGB JPEG or PNG."
        ) from exc


def to_rgb(image: Image.Image, *, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert an image of any common Pillow mode to 8-bit RGB.

    Transparency (RGBA, LA, PA, or a palette/tRNS transparent colour) is
    composited onto ``background``: dropping alpha would expose whatever colour
    the editor left under transparent pixels, often black. 16-bit greyscale is
    scaled (65535 -> 255), because Pillow's own conversion clips it to 255.
    An RGB image without transparency is returned as is, not copied.

    Raises:
        ValueError: for modes with no standard 8-bit mapping (32-bit float ``F``)
            or that Pillow cannot convert to RGB.
    """
    if image.mode == "F":
        raise ValueError("32-bit float images (mode 'F') have no standard range; scale them to uint8 first")
    if image.mode in _SIXTEEN_BIT_MODES:
        image = _sixteen_bit_to_l(image)
    if image.has_transparency_data:
        canvas = Image.new("RGBA", image.size, (*background, 255))
        return Image.alpha_composite(canvas, image.convert("RGBA")).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def to_tensor(
    images: Sequence[Image.Image] | Image.Image | np.ndarray | torch.Tensor,
    size: int | None = None,
) -> torch.Tensor:
    """Batch images into a new ``float32 (B, 3, H, W)`` tensor in ``[0, 1]``.

    Accepts Pillow images (any mode, via :func:`to_rgb`), uint8 or float
    ``(H, W, 3)`` / ``(B, H, W, 3)`` arrays, and uint8 or float ``(3, H, W)`` /
    ``(B, 3, H, W)`` tensors; float inputs must already lie in ``[0, 1]``.
    With ``size``, each image's shorter side is resized to ``size`` (bicubic,
    antialiased) and the centre ``size x size`` square is cropped, so images of
    different shapes can share a batch. Every input goes through the same torch
    resize, so a Pillow image and its array give the same tensor. Tensor inputs
    stay on their device; everything else comes back on the CPU.
    """
    if size is not None and size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, np.ndarray):
        batches = [_array_to_batch(images)]
    elif isinstance(images, torch.Tensor):
        batches = [_tensor_to_batch(images)]
    else:
        batches = [_pil_to_batch(image) for image in images]
        if not batches:
            raise ValueError("to_tensor() got an empty sequence of images")
    if size is not None:
        batches = [_resize_center_crop(batch, size) for batch in batches]
    shapes = sorted({tuple(batch.shape[-2:]) for batch in batches})
    if len(shapes) > 1:
        raise ValueError(f"images have different sizes (H, W) {shapes}; pass size= to resize and crop them alike")
    return torch.cat(batches)


def save_image(image: Image.Image | torch.Tensor, path: str | os.PathLike[str]) -> Path:
    """Write ``image`` to ``path`` as PNG, atomically; return the path.

    The PNG goes to a hidden temporary file in the same folder, is flushed to
    disk and then moved over ``path`` with :func:`os.replace`, so readers and
    resumed runs never see a half-written output. Tensors are ``(3, H, W)`` or
    ``(1, 3, H, W)`` in ``[0, 1]`` (the output of :func:`to_tensor`). Missing
    parent folders are created.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"save_image writes PNG, so the path must end in .png: '{path}'")
    if isinstance(image, torch.Tensor):
        image = _tensor_to_pil(image)
    elif image.mode not in _PNG_MODES:
        image = to_rgb(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Dot-prefixed and not ending in .png, so globs for outputs never match it.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as file:  # "x": never clobber; permissions follow the umask
            image.save(file, format="PNG")
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.debug("Saved %s (%s %dx%d)", path, image.mode, *image.size)
    return path


def _check_is_file(path: Path) -> None:
    """Fail early, with a specific message, on paths that cannot be a photo."""
    if not path.exists():
        raise ImageLoadError(path, "the file does not exist", "Check the path and the working directory.")
    if path.is_dir():
        raise ImageLoadError(path, "it is a directory, not an image file", "Pass the path of one photo inside it.")
    if not path.is_file():
        raise ImageLoadError(path, "it is not a regular file", "Copy the photo to a regular file first.")
    if path.stat().st_size == 0:
        raise ImageLoadError(path, "the file is empty (0 bytes)", "Re-copy or re-download the photo.")


def _check_size(path: Path, size: tuple[int, int], *, max_pixels: int, min_side: int) -> None:
    """Reject too large (decompression bomb) or too small images from header size alone."""
    width, height = size
    if width * height > max_pixels:
        raise ImageLoadError(
            path,
            f"its header claims {width}x{height} = {width * height:,} pixels, more than the limit of "
            f"{max_pixels:,} (a possible decompression bomb), so it was not decoded",
            "Downscale the photo, or pass a larger max_pixels if you trust the file.",
        )
    if min(width, height) < min_side:
        raise ImageLoadError(
            path,
            f"it is only {width}x{height} pixels; both sides must be at least {min_side}",
            "Use a larger photo of the subject.",
        )


def _unsupported_format_error(path: Path) -> ImageLoadError:
    """Name HEIC specifically: it is what iPhones save, and Pillow needs a plugin for it."""
    supported = ", ".join(_available_formats())
    if _looks_like_heif(path):
        return ImageLoadError(
            path,
            "it is a HEIC/HEIF image, which Pillow cannot read without a plugin",
            "Convert it to JPEG or PNG, or `pip install pillow-heif` and call pillow_heif.register_heif_opener().",
        )
    return ImageLoadError(
        path,
        f"it is not an image in a supported format ({supported})",
        "Export the photo as JPEG or PNG.",
    )


def _available_formats() -> tuple[str, ...]:
    """SUPPORTED_FORMATS that this Pillow can open (Image.open rejects unknown names)."""
    Image.init()  # registers every installed plugin; a no-op after the first call
    return tuple(name for name in SUPPORTED_FORMATS if name in Image.OPEN)


def _looks_like_heif(path: Path) -> bool:
    """True if the file starts with an ISO-BMFF ``ftyp`` box naming a HEVC (HEIC) brand."""
    with open(path, "rb") as file:
        head = file.read(64)
    if head[4:8] != b"ftyp":
        return False
    box_end = min(struct.unpack(">I", head[:4])[0], len(head))
    brands = {head[8:12]} | {head[i : i + 4] for i in range(16, box_end - 3, 4)}
    return not brands.isdisjoint(_HEIF_BRANDS)


def _upright(image: Image.Image, path: Path) -> Image.Image:
    """Apply EXIF orientation; an unreadable EXIF block is logged, not fatal."""
    try:
        return ImageOps.exif_transpose(image)
    except _CORRUPT_ERRORS as exc:
        logger.warning("Ignoring unreadable EXIF orientation in %s: %s", path, exc)
        return image.copy()


def _sixteen_bit_to_l(image: Image.Image) -> Image.Image:
    """Scale 16-bit greyscale to 8 bits, rounding (257 * v maps back to v)."""
    values = np.asarray(image).astype(np.int32)
    if image.mode == "I" and (values.min() < 0 or values.max() > 65535):
        logger.debug("Clipping 32-bit mode 'I' image to the 16-bit range before scaling")
        values = values.clip(0, 65535)
    return Image.fromarray(((values + 128) // 257).astype(np.uint8))


def _pil_to_batch(image: Image.Image) -> torch.Tensor:
    if not isinstance(image, Image.Image):
        raise TypeError(f"to_tensor() expected PIL images in the sequence, got {type(image).__name__}")
    array = np.array(to_rgb(image), dtype=np.uint8)  # a writable copy for torch.from_numpy
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).float().div_(255)


def _array_to_batch(array: np.ndarray) -> torch.Tensor:
    if array.ndim not in (3, 4) or array.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) or (B, H, W, 3) array, got shape {array.shape}")
    batch = torch.from_numpy(np.array(array[None] if array.ndim == 3 else array, order="C"))  # writable copy
    return _scale_unit(batch.permute(0, 3, 1, 2))


def _tensor_to_batch(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.ndim not in (3, 4) or tensor.shape[-3] != 3:
        raise ValueError(f"expected a (3, H, W) or (B, 3, H, W) tensor, got shape {tuple(tensor.shape)}")
    return _scale_unit(tensor.detach().reshape(-1, *tensor.shape[-3:]))


def _scale_unit(batch: torch.Tensor) -> torch.Tensor:
    """uint8 -> [0, 1]; floats are checked, since [-1, 1] or [0, 255] inputs are common bugs."""
    if batch.numel() == 0:
        raise ValueError(f"to_tensor() got an empty batch of shape {tuple(batch.shape)}")
    if batch.dtype == torch.uint8:
        return batch.float().div_(255)
    if not batch.is_floating_point():
        raise TypeError(f"expected uint8 or floating-point pixels, got {batch.dtype}")
    batch = batch.float()
    low, high = batch.min().item(), batch.max().item()
    if low < -1e-3 or high > 1 + 1e-3:
        raise ValueError(f"float pixels must lie in [0, 1], got values in [{low:.3g}, {high:.3g}]")
    return batch.clamp(0, 1)


def _resize_center_crop(batch: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side to ``size`` (bicubic, antialiased), then centre-crop a square."""
    height, width = batch.shape[-2:]
    scale = size / min(height, width)
    new_height, new_width = max(size, round(height * scale)), max(size, round(width * scale))
    if (new_height, new_width) != (height, width):
        batch = F.interpolate(batch, size=(new_height, new_width), mode="bicubic", antialias=True, align_corners=False)
        batch = batch.clamp_(0, 1)  # bicubic overshoots near edges
    top, left = (new_height - size) // 2, (new_width - size) // 2
    return batch[..., top : top + size, left : left + size]


def _tensor_to_pil(tensor: torch.Tensor) -> Image.Image:
    if tensor.ndim == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 3 or tensor.shape[0] != 3:
        raise ValueError(f"save_image expects a (3, H, W) or (1, 3, H, W) tensor, got shape {tuple(tensor.shape)}")
    pixels = tensor.detach().to("cpu", torch.float32).clamp(0, 1).mul(255).round().to(torch.uint8)
    return Image.fromarray(pixels.permute(1, 2, 0).numpy())
