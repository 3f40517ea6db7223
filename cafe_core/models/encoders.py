"""The frozen encoders of CAFE, behind one API for the tiny world models and the real checkpoints.

- :class:`ClipEncoder` (``E_c``): global projected image/text embeddings, the patch features
  LLaVA feeds its projector, and text hidden states that condition a text-to-image UNet.
  Wraps a ``transformers.CLIPModel``; :meth:`ClipEncoder.from_open_clip` wraps an open_clip model.
- :class:`DinoEncoder` (``E_d``, and the DINO evaluation metric): patch tokens and CLS embeddings
  of a DINOv2 (``Dinov2Model``, with or without registers) or DINO v1 (``ViTModel``) checkpoint.
- :class:`FaceEmbedder`: the world's face-identity model (a ``ViTModel`` whose normalised CLS
  embedding is the identity vector), and :class:`OnnxFaceEmbedder`: a real face-recognition network
  exported to ONNX (ArcFace as insightface ships it); :func:`load_face_embedder` picks by folder.
  Anything with the same ``embed`` method satisfies :class:`IdentityEmbedder`.

Every encoder is frozen and stays in eval mode. Its methods run under ``torch.inference_mode()``
chunk by chunk (``batch_size``), then concatenate the chunks outside inference mode, so the
results are ordinary tensors that may feed trainable layers (a projector, a loss target).
Preprocessing is pure torch (no torchvision, no PIL resampling), driven by the checkpoint's
``preprocessor_config.json``.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..utils.hub import resolve_model

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ClipEncoder",
    "DinoEncoder",
    "FaceEmbedder",
    "IdentityEmbedder",
    "ImageTransform",
    "OnnxFaceEmbedder",
    "OpenClipEncoder",
    "load_face_embedder",
]

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ImageLike = Image.Image | np.ndarray | torch.Tensor
#: A single image or a batch: PIL image(s), uint8 (or [0, 1] float) arrays of shape (H, W, 3) /
#: (N, H, W, 3), or tensors of shape (3, H, W) / (N, 3, H, W), float in [0, 1] or uint8.
Images = ImageLike | Sequence[ImageLike]
DType = torch.dtype | str

# PIL resample codes, as saved in preprocessor_config.json, to torch interpolation modes.
_RESAMPLE_MODES = {0: "nearest-exact", 1: "bicubic", 2: "bilinear", 3: "bicubic", 4: "bilinear", 5: "bicubic"}
_PIL_RESAMPLE = {"nearest-exact": 0, "bilinear": 2, "bicubic": 3}


def _as_dtype(dtype: DType) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"Unknown dtype {dtype!r}; use e.g. torch.float32 or 'bfloat16'.")
    return resolved


# --- images ---------------------------------------------------------------------------------------


def _image_to_chw(image: ImageLike) -> torch.Tensor:
    """One image as a float (3, H, W) tensor in [0, 1] (uint8 inputs are divided by 255)."""
    if isinstance(image, Image.Image):
        image = np.array(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"Expected an array of shape (H, W, 3), got {image.shape}.")
        tensor = torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1)
    elif isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"Expected a tensor of shape (3, H, W), got {tuple(image.shape)}.")
        tensor = image
    else:
        raise TypeError(f"Unsupported image type {type(image).__name__}; expected PIL, numpy or torch.")
    return tensor.float() / 255.0 if tensor.dtype == torch.uint8 else tensor.float()


def _as_batch(images: Images) -> torch.Tensor | np.ndarray | list[ImageLike]:
    """A sliceable batch with a length: a 4-D tensor/array, or a list of single images."""
    if isinstance(images, Image.Image):
        return [images]
    if isinstance(images, (np.ndarray, torch.Tensor)):
        if images.ndim == 3:
            return images[None]
        if images.ndim != 4:
            raise ValueError(f"Expected one image or a batch of images, got shape {tuple(images.shape)}.")
        return images
    if isinstance(images, Sequence) and not isinstance(images, (str, bytes)):
        return list(images)
    raise TypeError(f"Unsupported image input {type(images).__name__}.")


def _chunks(batch: Sequence[Any], batch_size: int | None) -> Iterator[Any]:
    total = len(batch)
    if total == 0:
        raise ValueError("Got an empty batch.")
    step = total if batch_size is None else int(batch_size)
    if step < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    for start in range(0, total, step):
        yield batch[start : start + step]


def _square(value: Any, what: str) -> int:
    """An int side from a preprocessor size entry (int, or a dict with equal height/width)."""
    if isinstance(value, int):
        return value
    height, width = value.get("height"), value.get("width")
    if height != width:
        raise NotImplementedError(f"Non-square {what} {value} is not supported.")
    return int(height)


@dataclass(frozen=True)
class ImageTransform:
    """Torch-only preprocessing equivalent to a transformers image processor.

    Images already at ``size x size`` are only normalised: the world's images are rendered at
    model resolution, and re-zooming them (resize to 256, crop 224) would cut the subject.
    Other sizes are resized (shorter side to ``resize_to``, or straight to ``size x size`` when
    ``crop`` is false) and centre-cropped, with antialiasing, as the image processor would.
    """

    size: int
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    resize_to: int | None = None
    crop: bool = True
    interpolation: str = "bicubic"

    @classmethod
    def from_config(
        cls,
        config: dict[str, Any],
        *,
        default_size: int,
        default_mean: tuple[float, float, float] = CLIP_MEAN,
        default_std: tuple[float, float, float] = CLIP_STD,
    ) -> ImageTransform:
        """Read the fields of a ``preprocessor_config.json`` (CLIP, BiT/DINOv2 or ViT processors)."""
        size_entry = config.get("size") if config.get("do_resize", True) else None
        crop_entry = config.get("crop_size") if config.get("do_center_crop", "crop_size" in config) else None
        shortest = size_entry.get("shortest_edge") if isinstance(size_entry, dict) else None
        if crop_entry is not None:
            size = _square(crop_entry, "crop_size")
            resize_to = shortest if shortest is not None else (size_entry if isinstance(size_entry, int) else None)
            crop = True
        elif size_entry is not None:
            crop = shortest is not None
            size = shortest if crop else _square(size_entry, "size")
            resize_to = size
        else:
            size, resize_to, crop = default_size, None, True
        if config.get("do_normalize", True):
            mean = tuple(config.get("image_mean", default_mean))
            std = tuple(config.get("image_std", default_std))
        else:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        mode = _RESAMPLE_MODES.get(int(config.get("resample", 3)), "bicubic")
        return cls(size=int(size), mean=mean, std=std, resize_to=resize_to, crop=crop, interpolation=mode)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, **defaults: Any) -> ImageTransform:
        """From ``folder/preprocessor_config.json``, or the defaults when the file is absent."""
        path = pathlib.Path(folder) / "preprocessor_config.json"
        config = json.loads(path.read_text()) if path.is_file() else {}
        if not config:
            logger.info("No preprocessor_config.json in %s: using default preprocessing.", folder)
        return cls.from_config(config, **defaults)

    def to_processor(self, kind: str = "clip"):
        """The transformers image processor with these settings (``kind``: ``clip`` or ``bit``, DINOv2's),
        as a pipeline saves it; :meth:`from_config` of its ``to_dict()`` reads back this transform."""
        import transformers

        names = {"clip": "CLIPImageProcessor", "bit": "BitImageProcessor"}
        if kind not in names:
            raise ValueError(f"kind must be one of {sorted(names)}, got {kind!r}")
        # transformers 5 names the torchvision-free processors *Pil; the plain name needs torchvision.
        cls = getattr(transformers, names[kind] + "Pil", None) or getattr(transformers, names[kind])
        square = {"height": self.size, "width": self.size}
        return cls(
            do_resize=True,
            size={"shortest_edge": self.resize_to or self.size} if self.crop else square,
            do_center_crop=self.crop,
            crop_size=square,
            do_normalize=True,
            image_mean=list(self.mean),
            image_std=list(self.std),
            resample=_PIL_RESAMPLE[self.interpolation],
        )

    def _fit(self, pixels: torch.Tensor) -> torch.Tensor:
        """Resize and centre-crop a float (N, 3, H, W) batch to (N, 3, size, size)."""
        height, width = pixels.shape[-2:]
        if height == width == self.size:
            return pixels
        antialias = self.interpolation in ("bilinear", "bicubic")
        if self.crop:
            scale = (self.resize_to or self.size) / min(height, width)
            target = (max(self.size, round(height * scale)), max(self.size, round(width * scale)))
        else:
            target = (self.size, self.size)
        if target != (height, width):
            pixels = F.interpolate(pixels, size=target, mode=self.interpolation, antialias=antialias)
            pixels = pixels.clamp(0.0, 1.0)  # bicubic overshoots
        top, left = (target[0] - self.size) // 2, (target[1] - self.size) // 2
        return pixels[..., top : top + self.size, left : left + self.size]

    @torch.no_grad()
    def __call__(
        self, images: Images, *, device: torch.device | str = "cpu", dtype: DType = torch.float32
    ) -> torch.Tensor:
        """Images -> normalised (N, 3, size, size) on ``device`` in ``dtype``."""
        batch = _as_batch(images)
        if isinstance(batch, np.ndarray):
            if batch.shape[-1] != 3:
                raise ValueError(f"Expected arrays of shape (N, H, W, 3), got {batch.shape}.")
            batch = torch.from_numpy(np.require(batch, requirements=["C", "W"])).permute(0, 3, 1, 2)
        if isinstance(batch, torch.Tensor):
            if batch.shape[1] != 3:
                raise ValueError(f"Expected tensors of shape (N, 3, H, W), got {tuple(batch.shape)}.")
            pixels = batch.to(device)
            pixels = pixels.float() / 255.0 if pixels.dtype == torch.uint8 else pixels.float()
            pixels = self._fit(pixels)
        else:
            singles = [_image_to_chw(image).to(device) for image in batch]
            pixels = torch.cat([self._fit(image[None]) for image in singles])
        mean = torch.tensor(self.mean, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=pixels.device).view(1, 3, 1, 1)
        return ((pixels - mean) / std).to(_as_dtype(dtype))


# --- base -----------------------------------------------------------------------------------------


class _FrozenEncoder(nn.Module):
    """A frozen model plus its preprocessing; batched, inference-mode helpers."""

    processor_kind = "clip"  # the transformers image processor family its preprocessing is saved as

    def __init__(self, model: nn.Module, transform: ImageTransform) -> None:
        super().__init__()
        self.model = model
        self.transform = transform
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> _FrozenEncoder:
        """Stay in eval mode whatever a parent module asks: the encoder is frozen (no dropout)."""
        return super().train(False)

    def _reference_tensor(self) -> torch.Tensor:
        for tensor in self.model.parameters():
            return tensor
        for tensor in self.model.buffers():
            return tensor
        raise RuntimeError(f"{type(self.model).__name__} has no parameters to read a device from.")

    @property
    def device(self) -> torch.device:
        return self._reference_tensor().device

    @property
    def dtype(self) -> torch.dtype:
        return self._reference_tensor().dtype

    @property
    def image_size(self) -> int:
        return self.transform.size

    def image_processor(self):
        """This encoder's preprocessing as a transformers image processor (a pipeline's component)."""
        return self.transform.to_processor(self.processor_kind)

    def preprocess(self, images: Images) -> torch.Tensor:
        """Images -> normalised pixel values (N, 3, S, S) on the model's device and dtype."""
        return self.transform(images, device=self.device, dtype=self.dtype)

    def _map_images(
        self, fn: Callable[[torch.Tensor], torch.Tensor], images: Images, batch_size: int | None
    ) -> torch.Tensor:
        outputs = []
        for part in _chunks(_as_batch(images), batch_size):
            with torch.inference_mode():
                outputs.append(fn(self.preprocess(part)))
        return torch.cat(outputs)  # outside inference mode: an ordinary tensor


def _load_folder(
    name_or_path: str | os.PathLike, model_root: str | os.PathLike | None
) -> tuple[pathlib.Path, dict[str, Any]]:
    folder = resolve_model(name_or_path, model_root=model_root)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder} holds no config.json: it is not a transformers model folder.")
    return folder, json.loads(config_path.read_text())


def _has_weights_with_prefix(folder: pathlib.Path, prefix: str) -> bool:
    """Whether the folder's safetensors checkpoint stores any tensor named ``prefix...``."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return any(key.startswith(prefix) for key in json.loads(index.read_text())["weight_map"])
    single = folder / "model.safetensors"
    if not single.is_file():
        return False
    from safetensors import safe_open

    with safe_open(str(single), framework="pt") as handle:
        return any(key.startswith(prefix) for key in handle.keys())


# --- CLIP -----------------------------------------------------------------------------------------


class ClipEncoder(_FrozenEncoder):
    """``E_c``: a frozen CLIP (``transformers.CLIPModel``) behind the CAFE encoder API.

    Attributes:
        image_size: side of the (square) model input.
        embed_dim: width of the projected embeddings ``c = E_c(img)``.
        patch_dim: vision hidden size (width of :meth:`patch_features`).
        num_patches: number of patch tokens (CLS excluded).
        text_hidden_size: width of :meth:`text_hidden_states`.
        max_text_length: texts are truncated to this many tokens.
    """

    def __init__(self, model: nn.Module, tokenizer: Any | None = None, transform: ImageTransform | None = None) -> None:
        vision, text = model.config.vision_config, model.config.text_config
        super().__init__(model, transform or ImageTransform(size=vision.image_size))
        self.tokenizer = tokenizer
        self.embed_dim: int = model.config.projection_dim
        self.patch_dim: int = vision.hidden_size
        self.num_patches: int = (self.image_size // vision.patch_size) ** 2
        self.text_hidden_size: int = text.hidden_size
        self.max_text_length: int = text.max_position_embeddings
        self._check_eos(tokenizer, text)

    @staticmethod
    def _check_eos(tokenizer: Any | None, text_config: Any) -> None:
        """CLIP pools text at the EOS token: warn when tokenizer and config disagree on where it is.

        transformers reads ``eos_token_id == 2`` as the legacy OpenAI marker and then pools at the
        *highest* token id instead, which is the EOS only when EOS is the last vocabulary entry.
        """
        if tokenizer is None:
            return
        config_eos = getattr(text_config, "eos_token_id", None)
        tokenizer_eos = getattr(tokenizer, "eos_token_id", None)
        pooled_eos = len(tokenizer) - 1 if config_eos == 2 else config_eos
        if pooled_eos is not None and tokenizer_eos != pooled_eos:
            logger.warning(
                "CLIP text config eos_token_id=%s makes transformers pool token id %s, but the tokenizer's "
                "EOS id is %s: text embeddings will pool the wrong token.",
                config_eos,
                pooled_eos,
                tokenizer_eos,
            )

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        model_root: str | os.PathLike | None = None,
        device: torch.device | str = "cpu",
        dtype: DType = torch.float32,
    ) -> ClipEncoder:
        """Load a CLIPModel folder (local, under ``model_root``, or in the HF cache); never downloads."""
        from transformers import AutoTokenizer, CLIPModel

        folder, config = _load_folder(name_or_path, model_root)
        if config.get("model_type") != "clip":
            raise ValueError(
                f"{folder} holds a {config.get('model_type')!r} model; ClipEncoder needs a full CLIPModel "
                "(model_type 'clip', with both towers)."
            )
        model = CLIPModel.from_pretrained(folder, use_safetensors=True, dtype=_as_dtype(dtype)).to(device)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        vision_size = config.get("vision_config", {}).get("image_size", 224)
        transform = ImageTransform.from_folder(folder, default_size=vision_size)
        logger.info("Loaded CLIP encoder from %s", folder)
        return cls(model, tokenizer, transform)

    @classmethod
    def from_open_clip(
        cls,
        model_name: str,
        pretrained: str | os.PathLike | None = None,
        device: torch.device | str = "cpu",
        dtype: DType = torch.float32,
    ) -> OpenClipEncoder:
        """Wrap an open_clip model (e.g. ``"ViT-L-14-336"``) behind the same methods.

        Args:
            model_name: an open_clip architecture name (see ``open_clip.list_models()``, or one
                registered with ``open_clip.add_model_config``).
            pretrained: ``None`` for random weights, or a local ``.safetensors`` checkpoint.
                Pretrained *tags* are refused: open_clip would download them.
        """
        open_clip = _import_open_clip()
        checkpoint = None
        if pretrained is not None:
            checkpoint = pathlib.Path(pretrained).expanduser()
            if checkpoint.suffix != ".safetensors" or not checkpoint.is_file():
                raise ValueError(
                    f"pretrained={os.fspath(pretrained)!r} must be a local .safetensors checkpoint file: "
                    "tags would make open_clip download, and pickled checkpoints are not loaded."
                )
        model = open_clip.create_model(model_name, pretrained=None if checkpoint is None else str(checkpoint))
        model = model.to(device=device, dtype=_as_dtype(dtype))
        tokenizer = open_clip.get_tokenizer(model_name)
        return OpenClipEncoder(model, tokenizer)

    # --- inputs -----------------------------------------------------------------------------------

    def tokenize(self, texts: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask (N, L), padded to the longest text, on the model device."""
        if self.tokenizer is None:
            raise RuntimeError("This ClipEncoder was built without a tokenizer; text methods need one.")
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ValueError("Got no texts.")
        encoded = self.tokenizer(
            texts, padding="longest", truncation=True, max_length=self.max_text_length, return_tensors="pt"
        )
        return encoded["input_ids"].to(self.device), encoded["attention_mask"].to(self.device)

    @staticmethod
    def _map_tokens(
        fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        ids: torch.Tensor,
        mask: torch.Tensor,
        batch_size: int | None,
    ) -> torch.Tensor:
        outputs = []
        for ids_part, mask_part in zip(_chunks(ids, batch_size), _chunks(mask, batch_size)):
            with torch.inference_mode():
                outputs.append(fn(ids_part, mask_part))
        return torch.cat(outputs)

    # --- public API -------------------------------------------------------------------------------

    def image_embeds(self, images: Images, normalize: bool = False, *, batch_size: int | None = None) -> torch.Tensor:
        """(N, embed_dim) global projected image embeddings ``c = E_c(img)``."""
        embeds = self._map_images(self._encode_image, images, batch_size)
        return F.normalize(embeds, dim=-1) if normalize else embeds

    def text_embeds(
        self, texts: str | Sequence[str], normalize: bool = False, *, batch_size: int | None = None
    ) -> torch.Tensor:
        """(N, embed_dim) projected text embeddings, in the image embeddings' space."""
        embeds = self._map_tokens(self._encode_text, *self.tokenize(texts), batch_size)
        return F.normalize(embeds, dim=-1) if normalize else embeds

    def patch_features(self, images: Images, layer: int = -2, *, batch_size: int | None = None) -> torch.Tensor:
        """(N, num_patches, patch_dim): hidden states of ``layer`` without CLS, as LLaVA feeds its projector.

        ``layer`` indexes the hidden states as transformers does: 0 is the embedding output,
        ``-1`` the last block (before the post-layernorm), ``-2`` (LLaVA's choice) the one before.
        """
        return self._map_images(lambda pixels: self._patch_tokens(pixels, layer), images, batch_size)

    def text_hidden_states(
        self, texts: str | Sequence[str], *, batch_size: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, L, text_hidden_size) final hidden states and their (N, L) attention mask.

        This is what a Stable-Diffusion-style UNet cross-attends to.
        """
        ids, mask = self.tokenize(texts)  # all at once: one padded length for every chunk
        return self._map_tokens(self._text_states, ids, mask, batch_size), mask

    # --- backend: transformers CLIPModel (OpenClipEncoder overrides these) ------------------------

    def _encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        pooled = self.model.vision_model(pixel_values=pixels).pooler_output
        return self.model.visual_projection(pooled)

    def _encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pooled = self.model.text_model(input_ids=ids, attention_mask=mask).pooler_output
        return self.model.text_projection(pooled)

    def _patch_tokens(self, pixels: torch.Tensor, layer: int) -> torch.Tensor:
        hidden = self.model.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states
        return hidden[layer][:, 1:]

    def _text_states(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model.text_model(input_ids=ids, attention_mask=mask).last_hidden_state


# --- open_clip ------------------------------------------------------------------------------------


def _import_open_clip() -> Any:
    try:
        import open_clip
    except ImportError as error:  # open_clip also fails to import when torchvision does
        raise ImportError(
            f"The open_clip path needs open_clip_torch and torchvision ({error}). Install the extra: "
            "pip install 'cafe-core[openclip]'"
        ) from error
    return open_clip


class OpenClipEncoder(ClipEncoder):
    """An open_clip ``CLIP`` model behind the :class:`ClipEncoder` API (build it with
    :meth:`ClipEncoder.from_open_clip`)."""

    def __init__(
        self, model: nn.Module, tokenizer: Callable[..., torch.Tensor], transform: ImageTransform | None = None
    ) -> None:
        visual = model.visual
        if transform is None:
            cfg = getattr(visual, "preprocess_cfg", None) or {}
            size = cfg.get("size", visual.image_size)
            size = size if isinstance(size, int) else _square({"height": size[0], "width": size[1]}, "image size")
            transform = ImageTransform(
                size=size,
                mean=tuple(cfg.get("mean", getattr(visual, "image_mean", None) or CLIP_MEAN)),
                std=tuple(cfg.get("std", getattr(visual, "image_std", None) or CLIP_STD)),
                interpolation=cfg.get("interpolation", "bicubic"),
            )
        _FrozenEncoder.__init__(self, model, transform)
        self.tokenizer = tokenizer
        self.embed_dim = int(visual.output_dim)
        self.patch_dim = int(visual.transformer.width) if hasattr(visual, "transformer") else -1
        grid = getattr(visual, "grid_size", None)
        self.num_patches = int(grid[0] * grid[1]) if grid is not None else -1
        text = self._text_tower()
        self.text_hidden_size = int(text.token_embedding.embedding_dim) if text is not None else -1
        self.max_text_length = int(getattr(tokenizer, "context_length", 77))

    def _text_tower(self) -> nn.Module | None:
        """The module that owns the text transformer's final layernorm (``ln_final``), if any."""
        for tower in (self.model, getattr(self.model, "text", None)):
            if tower is not None and hasattr(tower, "ln_final") and hasattr(tower, "token_embedding"):
                return tower
        return None

    def tokenize(self, texts: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """open_clip token ids (N, context_length) and a mask of the non-pad tokens."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ValueError("Got no texts.")
        ids = self.tokenizer(texts).to(self.device)
        tower = self._text_tower()
        pad_id = int(getattr(tower, "pad_id", 0)) if tower is not None else 0
        return ids, (ids != pad_id).long()

    def _encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    def _encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(ids)

    def _patch_tokens(self, pixels: torch.Tensor, layer: int) -> torch.Tensor:
        visual = self.model.visual
        if not hasattr(visual, "forward_intermediates"):
            raise NotImplementedError(
                "This open_clip version's vision tower has no forward_intermediates(); patch features need "
                "open_clip_torch >= 2.26 with a native VisionTransformer (timm towers are not supported)."
            )
        num_blocks = len(visual.transformer.resblocks)
        # hidden_states[k] (transformers indexing) is the output of block k - 1.
        block = (layer if layer >= 0 else num_blocks + 1 + layer) - 1
        if not 0 <= block < num_blocks:
            raise ValueError(f"layer={layer} selects no transformer block of this {num_blocks}-block tower.")
        output = visual.forward_intermediates(pixels, indices=[block], intermediates_only=True, output_fmt="NLC")
        return output["image_intermediates"][0]

    def _text_states(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        tower = self._text_tower()
        if tower is None:
            raise NotImplementedError(
                "This open_clip model's text tower has no ln_final (e.g. a Hugging Face text tower); "
                "text hidden states are only available for native open_clip text transformers."
            )
        captured: list[torch.Tensor] = []
        handle = tower.ln_final.register_forward_hook(lambda module, args, output: captured.append(output))
        try:
            self.model.encode_text(ids)
        finally:
            handle.remove()
        return captured[-1]


# --- DINO and faces -------------------------------------------------------------------------------


_V = TypeVar("_V", bound="_VitBackbone")


def _vit_classes() -> dict[str, type]:
    from transformers import Dinov2Model, Dinov2WithRegistersModel, ViTModel

    return {"dinov2": Dinov2Model, "dinov2_with_registers": Dinov2WithRegistersModel, "vit": ViTModel}


class _VitBackbone(_FrozenEncoder):
    """A frozen ViT-family model (DINOv2, DINOv2 with registers, or ViT) and its token layout."""

    default_mean: tuple[float, float, float] = IMAGENET_MEAN
    default_std: tuple[float, float, float] = IMAGENET_STD
    processor_kind = "bit"

    def __init__(self, model: nn.Module, transform: ImageTransform | None = None) -> None:
        config = model.config
        super().__init__(
            model, transform or ImageTransform(config.image_size, mean=self.default_mean, std=self.default_std)
        )
        self.hidden_size: int = config.hidden_size
        self.num_patches: int = (self.image_size // config.patch_size) ** 2
        self.num_prefix_tokens: int = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
        # ViTModel needs interpolated position embeddings off its training size; DINOv2 always interpolates.
        self._interpolate = config.model_type == "vit" and self.image_size != config.image_size

    @classmethod
    def from_pretrained(
        cls: type[_V],
        name_or_path: str | os.PathLike,
        *,
        model_root: str | os.PathLike | None = None,
        device: torch.device | str = "cpu",
        dtype: DType = torch.float32,
    ) -> _V:
        """Load a DINOv2 / ViT folder (local, under ``model_root``, or in the HF cache); never downloads."""
        folder, config = _load_folder(name_or_path, model_root)
        classes = _vit_classes()
        model_type = config.get("model_type")
        if model_type not in classes:
            raise ValueError(
                f"{folder} holds a {model_type!r} model; {cls.__name__} supports model types {sorted(classes)}."
            )
        kwargs: dict[str, Any] = {}
        if model_type == "vit":  # the pooler is unused; load it only when the checkpoint has one
            kwargs["add_pooling_layer"] = _has_weights_with_prefix(folder, "pooler.")
        model = classes[model_type].from_pretrained(folder, use_safetensors=True, dtype=_as_dtype(dtype), **kwargs)
        transform = ImageTransform.from_folder(
            folder,
            default_size=config.get("image_size", 224),
            default_mean=cls.default_mean,
            default_std=cls.default_std,
        )
        logger.info("Loaded %s from %s", cls.__name__, folder)
        return cls(model.to(device), transform)

    def _tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """Final-layernormed tokens (N, prefix + patches, hidden)."""
        kwargs = {"interpolate_pos_encoding": True} if self._interpolate else {}
        return self.model(pixel_values=pixels, **kwargs).last_hidden_state


class DinoEncoder(_VitBackbone):
    """``E_d`` (DINOv2) and the DINO evaluation encoder (ViT-S/16), frozen.

    Attributes:
        image_size: side of the (square) model input.
        hidden_size: token width.
        num_patches: patch tokens per image (CLS and register tokens excluded).
    """

    def patch_tokens(self, images: Images, *, batch_size: int | None = None) -> torch.Tensor:
        """(N, num_patches, hidden_size) final-layernormed patch tokens ``d = E_d(x)``."""
        return self._map_images(lambda pixels: self._tokens(pixels)[:, self.num_prefix_tokens :], images, batch_size)

    def cls_embeds(self, images: Images, normalize: bool = False, *, batch_size: int | None = None) -> torch.Tensor:
        """(N, hidden_size) final-layernormed CLS embeddings (the DINO similarity metric's features)."""
        embeds = self._map_images(lambda pixels: self._tokens(pixels)[:, 0], images, batch_size)
        return F.normalize(embeds, dim=-1) if normalize else embeds


@runtime_checkable
class IdentityEmbedder(Protocol):
    """Anything that maps face images to L2-normalised identity vectors (pluggable face model)."""

    def embed(self, images: Images, *, batch_size: int | None = None) -> torch.Tensor: ...


class FaceEmbedder(_VitBackbone):
    """The default face-identity model: a ViT whose final-layernormed CLS, L2-normalised, is the identity.

    Identity similarity between two faces is the dot product of their embeddings.
    """

    def embed(self, images: Images, *, batch_size: int | None = None) -> torch.Tensor:
        """(N, hidden_size) unit-norm identity embeddings."""
        embeds = self._map_images(lambda pixels: self._tokens(pixels)[:, 0], images, batch_size)
        return F.normalize(embeds, dim=-1)


class OnnxFaceEmbedder:
    """A face-recognition network exported to ONNX, behind :class:`IdentityEmbedder`.

    This is how insightface ships ArcFace (e.g. ``w600k_r50.onnx`` of its ``buffalo_l`` pack) and
    how AdaFace / ArcFace IResNet backbones are commonly exported: one input ``(N, 3, H, W)``
    (RGB, usually 112 x 112, ``(x - 127.5) / 127.5``) and one output ``(N, D)``, normalised here.
    The folder holds ``model.onnx`` and, optionally, a ``preprocessor_config.json`` whose
    ``image_mean`` / ``image_std`` (in [0, 1] units) replace the default 0.5 / 0.5. Images are resized
    and centre-cropped, not detected and aligned: pass face crops, as the evaluation's photos are.
    Needs ``onnxruntime`` (``pip install 'cafe-core[faces]'``).
    """

    def __init__(self, session: Any, transform: ImageTransform) -> None:
        self.session = session
        self.transform = transform
        self.input_name = session.get_inputs()[0].name

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        model_root: str | os.PathLike | None = None,
        device: torch.device | str = "cpu",
    ) -> OnnxFaceEmbedder:
        """Load ``model.onnx`` from a folder (local, under ``model_root``, or in the HF cache); never downloads."""
        try:
            import onnxruntime
        except ImportError as error:
            raise ImportError(f"ONNX face models need onnxruntime ({error}): pip install 'cafe-core[faces]'") from error
        folder = resolve_model(name_or_path, model_root=model_root)
        path = folder / "model.onnx"
        if not path.is_file():
            raise FileNotFoundError(f"{folder} holds no model.onnx: it is not an ONNX face-recognition folder.")
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        session = onnxruntime.InferenceSession(str(path), providers=providers)
        shape = session.get_inputs()[0].shape
        size = shape[-1] if isinstance(shape[-1], int) else 112
        transform = ImageTransform.from_folder(
            folder, default_size=size, default_mean=(0.5,) * 3, default_std=(0.5,) * 3
        )
        logger.info("Loaded ONNX face embedder from %s (%s)", folder, providers[0])
        return cls(session, transform)

    @property
    def image_size(self) -> int:
        return self.transform.size

    def image_processor(self):
        """This encoder's preprocessing as a transformers image processor (a pipeline's component)."""
        return self.transform.to_processor(self.processor_kind)

    def embed(self, images: Images, *, batch_size: int | None = None) -> torch.Tensor:
        """(N, D) unit-norm identity embeddings."""
        outputs = []
        for part in _chunks(_as_batch(images), batch_size):
            pixels = self.transform(part).numpy().astype(np.float32)
            outputs.append(torch.from_numpy(self.session.run(None, {self.input_name: pixels})[0]))
        return F.normalize(torch.cat(outputs).float(), dim=-1)


def load_face_embedder(
    name_or_path: str | os.PathLike, *, model_root: str | os.PathLike | None = None, device: torch.device | str = "cpu"
) -> IdentityEmbedder:
    """The face-identity model a profile names: an ONNX network (``model.onnx``) or a ViT folder."""
    folder = resolve_model(name_or_path, model_root=model_root)
    if (folder / "model.onnx").is_file():
        return OnnxFaceEmbedder.from_pretrained(folder, device=device)
    return FaceEmbedder.from_pretrained(folder, device=device)
