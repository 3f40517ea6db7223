"""Training of CAFE's two trained parts on top of the resumable loop: G by eq. 3, M by eq. 2.

Both run through accelerate. Each step's global batch is a pure function of (seed, step) and is
sharded over processes, so ``accelerate launch --num_processes 2`` trains the same model as one
process, and a resumed run sees the batches an uninterrupted one would have.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .loop import LoopConfig, cosine_lr, run_loop, set_lr, step_generator, step_torch_generator

__all__ = ["AssistantTraining", "GeneratorTraining", "train_assistant", "train_generator"]


def update(accelerator, loss: torch.Tensor, params, optimizer: torch.optim.Optimizer, max_norm: float = 1.0) -> None:
    """One optimiser update under accelerate: backward (gradients averaged over processes), clip, step, clear."""
    accelerator.backward(loss)
    accelerator.clip_grad_norm_(params, max_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


# --- CAFE's generator G (eq. 3) -------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratorTraining:
    steps: int
    batch_size: int
    lr: float
    drop_p: float = 0.1  # c and d each dropped with this probability (classifier-free guidance)
    weight_decay: float = 0.01
    checkpoint_every: int = 200
    seed: int = 0
    snr_gamma: float | None = None  # Min-SNR-gamma loss weights (CafeGenerator.forward); None: eq. 3's plain mean
    ema_decay: float | None = None  # publish an exponential moving average of the weights; None: the last weights


def train_generator(
    generator,
    targets: np.ndarray,
    c: torch.Tensor,
    d: torch.Tensor,
    config: GeneratorTraining,
    ckpt_dir: str | os.PathLike,
    *,
    accelerator=None,
    on_checkpoint: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Train G on (target image y, c = E_c(y), d = E_d(x)) triples with accelerate.

    The global batch of each step is drawn from `step_generator(seed, step)` and split over
    processes, so `accelerate launch --num_processes 2` trains the same model as one process.
    """
    from accelerate import Accelerator

    if not (len(targets) == len(c) == len(d)):
        raise ValueError(f"targets, c and d must align, got {len(targets)}, {len(c)}, {len(d)}")
    if config.batch_size > len(targets):
        raise ValueError(f"batch_size {config.batch_size} exceeds the {len(targets)} training pairs")
    accelerator = accelerator or Accelerator()
    if config.batch_size % accelerator.num_processes:
        raise ValueError(f"batch_size {config.batch_size} must divide over {accelerator.num_processes} processes")
    generator.train()
    if generator.vae is not None:
        generator.vae.eval()
    params = generator.trainable_parameters()  # the UNet (CAFE processors inside) and the conditioner
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    ema = _ema(generator.trainable_module(), config.ema_decay)
    model, optimizer = accelerator.prepare(generator, optimizer)
    rank, world = accelerator.process_index, accelerator.num_processes
    images = torch.from_numpy(np.ascontiguousarray(targets))

    def step(i: int) -> dict:
        rng = step_generator(config.seed, i)
        idx = rng.choice(len(targets), config.batch_size, replace=False)
        draws = generator.training_draws(
            (config.batch_size, *_target_shape(generator)), step_torch_generator(config.seed, i), config.drop_p
        )
        shard = slice(rank, None, world)
        set_lr(optimizer, cosine_lr(i, config.steps, config.lr))
        y = generator.encode_target(images[idx[shard]].permute(0, 3, 1, 2).float() / 255.0)
        loss = model(
            y, c[idx[shard]], d[idx[shard]], **{k: v[shard] for k, v in draws.items()}, snr_gamma=config.snr_gamma
        )
        update(accelerator, loss, params, optimizer)
        if ema is not None:
            ema.update_parameters(generator.trainable_module())
        return {"loss": loss.detach()}

    loop = LoopConfig(name="generator", steps=config.steps, checkpoint_every=config.checkpoint_every, seed=config.seed)
    trainable = {"unet": generator.unet, "conditioner": generator.conditioner}
    if ema is not None:
        trainable["ema"] = ema  # checkpointed with the weights, so a resumed run averages what an unbroken one would
    stats = run_loop(loop, step, trainable, optimizer, ckpt_dir, on_checkpoint=on_checkpoint, accelerator=accelerator)
    if ema is not None:
        with torch.no_grad():
            for live, average in zip(generator.trainable_parameters(), ema.module.parameters(), strict=True):
                live.copy_(average)
    generator.eval()
    return stats


def _ema(module: torch.nn.Module, decay: float | None):
    """torch's exponential moving average of ``module``'s parameters (a copy), or None."""
    if decay is None:
        return None
    if not 0.0 < decay < 1.0:
        raise ValueError(f"ema_decay must lie in (0, 1), got {decay}")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(decay))


def _target_shape(generator) -> tuple[int, int, int]:
    cfg = generator.unet.config
    return (cfg.in_channels, cfg.sample_size, cfg.sample_size)


# --- the assistant M (eq. 2) ----------------------------------------------------------------------


@dataclass(frozen=True)
class AssistantTraining:
    """Training of V, H and [GEN]; the defaults are the paper's optimiser (AdamW, lr 2e-3, batch 128)."""

    steps: int = 2000
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.0
    checkpoint_every: int = 250
    seed: int = 0


def train_assistant(
    assistant,
    prompt_ids: list[list[int]],
    response_ids: list[list[int]],
    patches: torch.Tensor,
    targets: torch.Tensor,
    config: AssistantTraining,
    ckpt_dir: str | os.PathLike,
    *,
    accelerator=None,
    on_checkpoint: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Eq. 2 on (prompt with <image>, CLIP patches of x, response, E_c(y)) samples; the LM stays frozen.

    As for G, each step's global batch is a pure function of (seed, step), split over
    processes, so a resumed or multi-process run sees the batches a single run would.
    """
    from accelerate import Accelerator

    n = len(prompt_ids)
    if not (n == len(response_ids) == len(patches) == len(targets)):
        sizes = f"{n}, {len(response_ids)}, {len(patches)}, {len(targets)}"
        raise ValueError(f"prompts, responses, patches and targets must align, got {sizes}")
    if config.batch_size > n:
        raise ValueError(f"batch_size {config.batch_size} exceeds the {n} training dialogues")
    accelerator = accelerator or Accelerator()
    if config.batch_size % accelerator.num_processes:
        raise ValueError(f"batch_size {config.batch_size} must divide over {accelerator.num_processes} processes")
    parts = assistant.trainable_module()
    params = list(parts.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    assistant.train()
    model, optimizer = accelerator.prepare(assistant, optimizer)
    rank, world = accelerator.process_index, accelerator.num_processes

    def step(i: int) -> dict:
        idx = step_generator(config.seed, i).choice(n, config.batch_size, replace=False)[rank::world]
        set_lr(optimizer, cosine_lr(i, config.steps, config.lr))
        out = model([prompt_ids[j] for j in idx], patches[idx], [response_ids[j] for j in idx], targets[idx])
        update(accelerator, out["loss"], params, optimizer)
        return {
            "loss": out["loss"].detach(),
            "lm_loss": out["lm_loss"].detach(),
            "embed_loss": out["embed_loss"].detach(),
        }

    loop = LoopConfig(name="assistant", steps=config.steps, checkpoint_every=config.checkpoint_every, seed=config.seed)
    stats = run_loop(
        loop, step, {"assistant": parts}, optimizer, ckpt_dir, on_checkpoint=on_checkpoint, accelerator=accelerator
    )
    assistant.eval()
    return stats
