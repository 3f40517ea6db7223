"""Pretraining CAFE-mini's foundation models inside the world.

The paper takes CLIP, DINOv2, Llama-2 and Stable Diffusion 2 off the shelf; here each is
trained in minutes, with the same library classes at tiny sizes, on *training* subjects
only (evaluation subjects stay unseen):

- `clip`, `clip_eval`: transformers CLIPModel, contrastive image-caption (captions that are
  identical count as positives of each other, since the world repeats captions).
- `dino`, `dino_eval`: transformers Dinov2Model, self-supervised (two augmented views of one
  image, InfoNCE on the CLS token; no identity labels), with DINO's multi-crop: small local
  crops, drawn near the image centre where a photo's subject is, must agree with the whole
  image, so the embedding keeps the subject and not only the scene around it. No colour
  jitter: in this world colour *is* identity, and the augmentation must not teach the encoder
  to ignore it.
- `face_id`: transformers ViTModel trained with identity labels (normalised-softmax with
  margin), as real face recognition is.
- `lm`: transformers LlamaForCausalLM on chat-formatted world dialogues.
- `t2i`: diffusers UNet2DConditionModel in pixel space on the frozen `clip` text encoder.

Each model is written with `save_pretrained` (safetensors, real layouts) into
`models/world/<name>/`, then a `cafe_pretrain.json` marker records the config hash; a
model whose marker matches is skipped, so re-running costs nothing and a killed run
resumes from its last checkpoint under `models/world/.checkpoints/`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..models.encoders import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
from ..utils.digest import config_hash
from ..workbench import loop as train
from ..workbench.artifacts import build_once
from ..workbench.artifacts import read_marker as _read_marker
from ..workbench.code_deps import code_digest
from ..workbench.config import ClipParams, DinoParams, LMParams, Params, T2IParams, VitParams, to_dict
from ..workbench.loop import cosine_lr, set_lr
from .datasets import RenderedSet, build_tokenizer, check_vocabulary, dialogue_texts, render_set
from .world import DOMAINS, World, make_world

logger = logging.getLogger(__name__)

MODELS = ("clip", "clip_eval", "dino", "dino_eval", "face_id", "lm", "t2i")
SMALL_MODELS = ("clip_small", "dino_small")  # table 5's smaller encoders: stage pretrain_world_small
MARKER = "cafe_pretrain.json"


@dataclass
class Workspace:
    """Everything the per-model trainers share."""

    params: Params
    world: World
    model_root: Path
    cache_dir: Path
    _train_set: RenderedSet | None = None

    @property
    def train_set(self) -> RenderedSet:
        if self._train_set is None:
            p = self.params
            self._train_set = render_set(
                self.world, p.pretrain.dataset_size, split="train", seed=p.seed, cache_dir=self.cache_dir
            )
        return self._train_set

    def checkpoint_dir(self, name: str, key: str) -> Path:
        return self.model_root / ".checkpoints" / f"{name}-{key}"


# --- small shared pieces --------------------------------------------------------------------------


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def random_views(
    x: torch.Tensor,
    gen: torch.Generator,
    scale=(0.6, 1.0),
    flip: bool = True,
    size: int | None = None,
    spread: float = 1.0,
) -> torch.Tensor:
    """Batched random resized crop (+ horizontal flip) through one affine grid sample.

    x: (B, 3, H, W); returns (B, 3, size, size), or (B, 3, H, W) when ``size`` is None.
    ``spread`` < 1 keeps crop centres within that share of the room around the image centre.
    """
    b = x.shape[0]
    s = torch.empty(b).uniform_(*scale, generator=gen).sqrt()
    aspect = torch.empty(b).uniform_(-0.15, 0.15, generator=gen).exp()
    sx, sy = s * aspect.sqrt(), s / aspect.sqrt()
    sx, sy = sx.clamp(max=1.0), sy.clamp(max=1.0)
    tx = (torch.rand(b, generator=gen) * 2 - 1) * (1 - sx) * spread
    ty = (torch.rand(b, generator=gen) * 2 - 1) * (1 - sy) * spread
    if flip:
        sx = sx * torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, tx, sy, ty
    shape = list(x.shape) if size is None else [b, x.shape[1], size, size]
    grid = F.affine_grid(theta, shape, align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, params, max_norm: float | None = 1.0) -> dict:
    """Backward, clip, step, zero: the tail of every pretraining step."""
    loss.backward()
    if max_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss": loss.detach()}


def write_image_processor(folder: Path, size: int, mean, std, kind: str) -> None:
    """The preprocessing the model was trained with, in the transformers file format."""
    cfg = {
        "image_processor_type": kind,
        "do_resize": True,
        "size": {"shortest_edge": size},
        "do_center_crop": True,
        "crop_size": {"height": size, "width": size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(mean),
        "image_std": list(std),
        "do_convert_rgb": True,
        "resample": 3,
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(cfg, indent=2))


# --- CLIP -----------------------------------------------------------------------------------------


def clip_config(p: ClipParams, vocab_size: int, image_size: int, tokenizer):
    from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

    text = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=p.text_hidden_size,
        intermediate_size=4 * p.text_hidden_size,
        num_hidden_layers=p.text_layers,
        num_attention_heads=max(1, p.text_hidden_size // 16),
        max_position_embeddings=tokenizer.model_max_length,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    vision = CLIPVisionConfig(
        hidden_size=p.hidden_size,
        intermediate_size=4 * p.hidden_size,
        num_hidden_layers=p.layers,
        num_attention_heads=p.heads,
        image_size=image_size,
        patch_size=p.patch_size,
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=p.projection_dim)


def train_clip(ws: Workspace, p: ClipParams, name: str, out: Path, ckpt: Path) -> dict:
    from transformers import CLIPModel

    data = ws.train_set
    tokenizer = build_tokenizer(ws.world, for_clip=True)
    check_vocabulary(tokenizer, data.captions[:2000])
    enc = tokenizer(data.captions, padding="longest", return_tensors="pt")
    ids, mask = enc.input_ids, enc.attention_mask
    # Identical captions are positives of each other: map each caption to a class id.
    _, caption_ids = np.unique(np.array(data.captions), return_inverse=True)
    caption_ids = torch.from_numpy(caption_ids)
    torch.manual_seed(p.seed)
    model = CLIPModel(clip_config(p, len(tokenizer), ws.world.config.image_size, tokenizer)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=0.05)

    def step(i: int) -> dict:
        rng = train.step_generator(p.seed, i)
        idx = torch.from_numpy(rng.choice(len(data), p.batch_size, replace=False))
        set_lr(opt, cosine_lr(i, p.steps, p.lr))
        x = normalize(data.tensor(idx.numpy()), CLIP_MEAN, CLIP_STD)
        length = int(mask[idx].sum(1).max())
        outputs = model(input_ids=ids[idx, :length], attention_mask=mask[idx, :length], pixel_values=x)
        same = (caption_ids[idx, None] == caption_ids[None, idx]).float()
        target = same / same.sum(1, keepdim=True)
        logits = outputs.logits_per_image
        loss = 0.5 * (
            -(target * logits.log_softmax(1)).sum(1).mean() - (target * logits.T.log_softmax(1)).sum(1).mean()
        )
        return optimizer_step(loss, opt, model.parameters())

    stats = _loop(ws, name, p.steps, p.seed, step, {"model": model}, opt, ckpt)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_image_processor(out, ws.world.config.image_size, CLIP_MEAN, CLIP_STD, "CLIPImageProcessor")
    return stats


# --- DINO-like ------------------------------------------------------------------------------------


def vit_config(p: VitParams, image_size: int, kind: str):
    from transformers import Dinov2Config, ViTConfig

    common = dict(
        hidden_size=p.hidden_size,
        num_hidden_layers=p.layers,
        num_attention_heads=p.heads,
        image_size=image_size,
        patch_size=p.patch_size,
    )
    if kind == "dinov2":
        return Dinov2Config(mlp_ratio=4, **common)
    return ViTConfig(intermediate_size=4 * p.hidden_size, **common)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between two views: each image's other view is its only positive."""
    z = F.normalize(torch.cat([a, b]), dim=-1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    n = a.shape[0]
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(logits, target)


LOCAL_SCALE = (0.05, 0.4)  # DINO's local crops: a small share of the image (its default range)


def local_to_global(local: torch.Tensor, views: tuple[torch.Tensor, ...], temperature: float) -> torch.Tensor:
    """InfoNCE from each local crop to each global view: its own image's view is the positive.

    local: (L*B, D), crop k of image i at row k*B + i; each view (B, D).
    """
    b = views[0].shape[0]
    zl = F.normalize(local, dim=-1)
    target = torch.arange(zl.shape[0]) % b
    return torch.stack([F.cross_entropy(zl @ F.normalize(v, dim=-1).T / temperature, target) for v in views]).mean()


def train_dino(ws: Workspace, p: DinoParams, name: str, out: Path, ckpt: Path) -> dict:
    from transformers import Dinov2Model

    data = ws.train_set
    torch.manual_seed(p.seed)
    model = Dinov2Model(vit_config(p, ws.world.config.image_size, "dinov2")).train()
    head = torch.nn.Sequential(
        torch.nn.Linear(p.hidden_size, 2 * p.hidden_size), torch.nn.GELU(), torch.nn.Linear(2 * p.hidden_size, 64)
    )
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=p.lr, weight_decay=0.05)

    def step(i: int) -> dict:
        rng = train.step_generator(p.seed, i)
        gen = train.step_torch_generator(p.seed, i)
        idx = rng.choice(len(data), p.batch_size, replace=False)
        set_lr(opt, cosine_lr(i, p.steps, p.lr))
        x = data.tensor(idx)
        v1 = normalize(random_views(x, gen), IMAGENET_MEAN, IMAGENET_STD)
        v2 = normalize(random_views(x, gen), IMAGENET_MEAN, IMAGENET_STD)
        h = model(pixel_values=torch.cat([v1, v2])).pooler_output
        z1, z2 = head(h).chunk(2)
        loss = info_nce(z1, z2, temperature=0.2)
        if p.local_crops:
            # Multi-crop (DINO): a crop that sees a part of the image must agree with the whole,
            # so the embedding keeps what the parts near the centre show: the subject.
            local = dict(scale=LOCAL_SCALE, size=p.local_size, spread=p.local_spread)
            crops = torch.cat([random_views(x, gen, **local) for _ in range(p.local_crops)])
            zl = head(model(pixel_values=normalize(crops, IMAGENET_MEAN, IMAGENET_STD)).pooler_output)
            loss = (loss + p.local_crops * local_to_global(zl, (z1, z2), temperature=0.2)) / (1 + p.local_crops)
        return optimizer_step(loss, opt, params)

    stats = _loop(ws, name, p.steps, p.seed, step, {"model": model, "head": head}, opt, ckpt)
    model.save_pretrained(out)
    write_image_processor(out, ws.world.config.image_size, IMAGENET_MEAN, IMAGENET_STD, "BitImageProcessor")
    return stats


# --- face identity --------------------------------------------------------------------------------


def train_face_id(ws: Workspace, p: VitParams, name: str, out: Path, ckpt: Path) -> dict:
    from transformers import ViTModel

    data = ws.train_set
    faces = np.flatnonzero(data.domains == DOMAINS.index("face"))
    labels_of, labels = np.unique(data.subject_ids[faces], return_inverse=True)
    labels = torch.from_numpy(labels)
    torch.manual_seed(p.seed)
    model = ViTModel(vit_config(p, ws.world.config.image_size, "vit"), add_pooling_layer=False).train()
    classifier = torch.nn.Parameter(torch.randn(len(labels_of), p.hidden_size) * 0.02)
    opt = torch.optim.AdamW([*model.parameters(), classifier], lr=p.lr, weight_decay=0.05)
    scale, margin = 16.0, 0.2  # CosFace-style normalised softmax

    def step(i: int) -> dict:
        rng = train.step_generator(p.seed, i)
        gen = train.step_torch_generator(p.seed, i)
        pick = rng.choice(len(faces), p.batch_size, replace=False)
        set_lr(opt, cosine_lr(i, p.steps, p.lr))
        x = normalize(random_views(data.tensor(faces[pick]), gen, scale=(0.8, 1.0)), IMAGENET_MEAN, IMAGENET_STD)
        emb = F.normalize(model(pixel_values=x).last_hidden_state[:, 0], dim=-1)
        cos = emb @ F.normalize(classifier, dim=-1).T
        y = labels[pick]
        logits = scale * (cos - margin * F.one_hot(y, cos.shape[1]))
        loss = F.cross_entropy(logits, y)
        return {**optimizer_step(loss, opt, None, max_norm=None), "train_acc": (cos.argmax(1) == y).float().mean()}

    stats = _loop(ws, name, p.steps, p.seed, step, {"model": model, "classifier": _ParamHolder(classifier)}, opt, ckpt)
    model.save_pretrained(out)
    write_image_processor(out, ws.world.config.image_size, IMAGENET_MEAN, IMAGENET_STD, "ViTImageProcessor")
    return stats


class _ParamHolder(torch.nn.Module):
    """Lets a bare parameter ride along in a checkpoint."""

    def __init__(self, param: torch.nn.Parameter):
        super().__init__()
        self.param = param


# --- language model -------------------------------------------------------------------------------


def lm_config(p: LMParams, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=p.hidden_size,
        intermediate_size=int(p.hidden_size * 8 / 3) // 8 * 8,
        num_hidden_layers=p.layers,
        num_attention_heads=p.heads,
        num_key_value_heads=p.heads,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def tokenize_dialogues(tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    enc = tokenizer(texts, add_special_tokens=False, padding="longest", return_tensors="pt")
    labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
    return enc.input_ids, labels


def train_lm(ws: Workspace, p: LMParams, name: str, out: Path, ckpt: Path) -> dict:
    from transformers import LlamaForCausalLM

    tokenizer = build_tokenizer(ws.world, for_clip=False)
    pre = ws.params.pretrain
    texts = dialogue_texts(
        ws.world, pre.dialogues, split="train", seed=ws.params.seed, tokenizer=tokenizer, multi_turn_p=pre.multi_turn_p
    )
    check_vocabulary(tokenizer, texts[:2000])
    ids, labels = tokenize_dialogues(tokenizer, texts)
    torch.manual_seed(p.seed)
    model = LlamaForCausalLM(lm_config(p, tokenizer)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=0.01)

    def step(i: int) -> dict:
        rng = train.step_generator(p.seed, i)
        idx = torch.from_numpy(rng.choice(len(ids), p.batch_size, replace=False))
        set_lr(opt, cosine_lr(i, p.steps, p.lr))
        lab = labels[idx]
        length = int((lab != -100).sum(1).max())
        loss = model(input_ids=ids[idx, :length], labels=lab[:, :length]).loss
        return optimizer_step(loss, opt, model.parameters())

    stats = _loop(ws, name, p.steps, p.seed, step, {"model": model}, opt, ckpt)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return stats


# --- text-to-image --------------------------------------------------------------------------------


def unet_config(p: T2IParams, image_size: int, cross_attention_dim: int) -> dict:
    n = len(p.block_out_channels)
    return dict(
        sample_size=image_size,
        in_channels=3,
        out_channels=3,
        layers_per_block=p.layers_per_block,
        block_out_channels=list(p.block_out_channels),
        down_block_types=["DownBlock2D"] + ["CrossAttnDownBlock2D"] * (n - 1),
        up_block_types=["CrossAttnUpBlock2D"] * (n - 1) + ["UpBlock2D"],
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=p.attention_head_dim,
        norm_num_groups=8,
    )


def train_t2i(ws: Workspace, p: T2IParams, name: str, out: Path, ckpt: Path) -> dict:
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPModel, CLIPTextModel

    from ..models.text_to_image import TextToImage

    clip_dir = ws.model_root / "clip"
    tokenizer = AutoTokenizer.from_pretrained(clip_dir)
    clip = CLIPModel.from_pretrained(clip_dir, use_safetensors=True)
    text_encoder = CLIPTextModel(clip.config.text_config)  # SD's layout: the text tower alone
    text_encoder.load_state_dict(clip.text_model.state_dict())
    text_encoder.eval().requires_grad_(False)
    data = ws.train_set
    torch.manual_seed(p.seed)
    unet = UNet2DConditionModel(**unet_config(p, ws.world.config.image_size, text_encoder.config.hidden_size)).train()
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon")
    pipe = TextToImage(unet, scheduler, text_encoder, tokenizer)
    unet.train().requires_grad_(True)
    opt = torch.optim.AdamW(unet.parameters(), lr=p.lr, weight_decay=0.01)

    def step(i: int) -> dict:
        rng = train.step_generator(p.seed, i)
        gen = train.step_torch_generator(p.seed, i)
        idx = rng.choice(len(data), p.batch_size, replace=False)
        set_lr(opt, cosine_lr(i, p.steps, p.lr))
        x0 = data.tensor(idx) * 2 - 1
        prompts = ["" if rng.random() < p.caption_dropout else data.captions[j] for j in idx]
        context = pipe.encode_prompts(prompts)
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),), generator=gen)
        pred = unet(scheduler.add_noise(x0, noise, t), t, encoder_hidden_states=context.clone()).sample
        loss = F.mse_loss(pred, noise)
        return optimizer_step(loss, opt, unet.parameters())

    stats = _loop(ws, name, p.steps, p.seed, step, {"unet": unet}, opt, ckpt)
    pipe.unet.eval()
    pipe.save_pretrained(out)
    return stats


# --- orchestration --------------------------------------------------------------------------------


def _loop(ws: Workspace, name: str, steps: int, seed: int, step_fn, modules, opt, ckpt: Path) -> dict:
    cfg = train.LoopConfig(name=name, steps=steps, checkpoint_every=ws.params.pretrain.checkpoint_every, seed=seed)
    return train.run_loop(cfg, step_fn, modules, opt, ckpt)


TRAINERS: dict[str, Callable] = {
    "clip": train_clip,
    "clip_eval": train_clip,
    "clip_small": train_clip,
    "dino": train_dino,
    "dino_eval": train_dino,
    "dino_small": train_dino,
    "face_id": train_face_id,
    "lm": train_lm,
    "t2i": train_t2i,
}


def model_key(params: Params, name: str, dependency_keys: dict[str, str]) -> str:
    """What a model's weights depend on: world, data sizes, its own params, and upstream models."""
    p = params.pretrain
    deps = {"clip": dependency_keys.get("clip")} if name == "t2i" else {}
    data = {"dataset_size": p.dataset_size, "seed": params.seed}
    if name == "lm":
        data = {"dialogues": p.dialogues, "multi_turn_p": p.multi_turn_p, "seed": params.seed}
    return config_hash(to_dict(params.world), data, to_dict(getattr(p, name)), deps, name, code_digest(__name__))


def read_marker(folder: Path) -> dict | None:
    return _read_marker(folder, MARKER)


def pretrain_world(
    params: Params,
    model_root: Path,
    cache_dir: Path,
    *,
    only: tuple[str, ...] | None = None,
    models: tuple[str, ...] = MODELS,
) -> dict[str, dict]:
    """Train every model of ``models`` that is missing or stale into ``model_root/<name>``.

    ``cache_dir`` keeps the rendered training set; ``only`` limits which stale models train.
    Returns ``{name: marker}`` of every model that is up to date afterwards, each with
    ``seconds``: its training time in this call (None when it was already up to date). The time
    stays out of the model folder, so a rerun writes the same bytes.
    """
    if params.threads:
        torch.set_num_threads(params.threads)
    ws = Workspace(params, make_world(params), Path(model_root), Path(cache_dir))
    ws.model_root.mkdir(parents=True, exist_ok=True)
    keys: dict[str, str] = {}
    markers: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    unknown = sorted(set(models) - set(TRAINERS))
    if unknown:
        raise ValueError(f"unknown world model {unknown[0]!r}; known: {', '.join(TRAINERS)}")
    for name in models:
        key = model_key(params, name, keys)
        keys[name] = key
        out = ws.model_root / name
        marker = read_marker(out)
        if (marker is None or marker.get("key") != key) and only is not None and name not in only:
            continue
        ckpt = ws.checkpoint_dir(name, key)

        def build(tmp: Path, name: str = name, key: str = key, ckpt: Path = ckpt) -> dict:
            logger.info("pretraining %s (key %s)", name, key)
            started = time.perf_counter()
            stats = TRAINERS[name](ws, getattr(params.pretrain, name), name, tmp, ckpt)
            seconds[name] = round(time.perf_counter() - started, 1)
            logger.info("%s done in %.0f s", name, seconds[name])
            return {"final_losses": stats}

        record = build_once(out, key=key, marker=MARKER, build=build, checkpoint=ckpt)
        markers[name] = {**record, "seconds": seconds.get(name)}
    return markers
