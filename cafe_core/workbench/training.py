"""Training of CAFE's two trained parts on top of the resumable loop: G by eq. 3, M by eq. 2.

Both run through accelerate. Each step's global batch is a pure function of (seed, step) and is
sharded over processes, so ``accelerate launch --num_processes 2`` trains the same model as one
process, and a resumed run sees the batches an uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .config import StepCompute
from .loop import LoopConfig, cosine_lr, run_loop, set_lr, step_generator, step_torch_generator

__all__ = [
    "AssistantTraining",
    "GeneratorTraining",
    "assistant_step",
    "backward_in_parts",
    "generator_step",
    "train_assistant",
    "train_generator",
]


def update(accelerator, params, optimizer: torch.optim.Optimizer, max_norm: float = 1.0) -> None:
    """One optimiser update under accelerate, on gradients already accumulated: clip, step, clear."""
    accelerator.clip_grad_norm_(params, max_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def parts_of(rows: int, micro_batch_size: int | None) -> list[slice]:
    """The micro-batches of a batch of ``rows`` rows: slices of at most ``micro_batch_size`` rows
    (None: one slice, the whole batch)."""
    if micro_batch_size is not None and micro_batch_size < 1:
        raise ValueError(f"micro_batch_size must be at least 1 (or None for the whole batch), got {micro_batch_size}")
    size = micro_batch_size or rows
    return [slice(start, min(start + size, rows)) for start in range(0, rows, size)]


def backward_in_parts(
    accelerator, model, parts: list[slice], loss_of: Callable[[slice], dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Backward of one batch's loss computed a micro-batch at a time, so activations of only one
    micro-batch are alive at once (gradient accumulation within an optimiser step).

    ``loss_of(part)`` returns that micro-batch's share of each loss (its loss already weighted by its
    part of the batch, so the shares sum to the whole batch's loss). Gradients are synchronised
    across processes once, on the last micro-batch. Returns the summed shares, detached.

    Why not ``accelerator.accumulate``: it counts optimiser steps across loop iterations, while here one
    loop step is one update of the paper's batch, so a resumed run and ``(seed, step)`` batches stay as they are.
    """
    totals: dict[str, torch.Tensor] = {}
    for k, part in enumerate(parts):
        last = k == len(parts) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            shares = loss_of(part)
            accelerator.backward(shares["loss"])
        for name, value in shares.items():
            totals[name] = totals.get(name, 0.0) + value.detach()
    return totals


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
    compute: StepCompute = StepCompute()  # how a step is computed (micro-batches, checkpointing), not what


def train_generator(
    generator,
    targets: torch.Tensor,
    c: torch.Tensor,
    d: torch.Tensor,
    config: GeneratorTraining,
    ckpt_dir: str | os.PathLike,
    *,
    accelerator=None,
    on_checkpoint: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Train G on (target y, c = E_c(y), d = E_d(x)) triples with accelerate.

    ``targets``: (N, ...) :meth:`CafeGenerator.target_parameters` of the targets y, ``c`` (N, clip_dim),
    ``d`` (N, tokens, dino_dim); rows aligned, and they may be memory-mapped (each step reads its rows).
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
    parts_of(config.batch_size, config.compute.micro_batch_size)  # a bad micro-batch size fails before any work
    generator.train()
    if generator.vae is not None:
        generator.vae.eval()
    if config.compute.gradient_checkpointing:
        generator.enable_gradient_checkpointing()
    params = generator.trainable_parameters()  # the UNet (CAFE processors inside) and the conditioner
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    ema = _ema(generator.trainable_module(), config.ema_decay)
    model, optimizer = accelerator.prepare(generator, optimizer)
    rank, world = accelerator.process_index, accelerator.num_processes
    target_shape = (generator.unet.config.in_channels, *targets.shape[-2:])  # the UNet's channels at the data's size

    def step(i: int) -> dict:
        rng = step_generator(config.seed, i)
        idx = rng.choice(len(targets), config.batch_size, replace=False)[rank::world]
        shape, torch_rng = (config.batch_size, *target_shape), step_torch_generator(config.seed, i)
        draws = generator.training_draws(shape, torch_rng, config.drop_p)
        if generator.vae is not None:  # each target a latent drawn from its VAE distribution, the batch's at once
            draws["latent_noise"] = torch.randn(shape, generator=torch_rng)
        set_lr(optimizer, cosine_lr(i, config.steps, config.lr))
        batch = {"targets": targets[idx], "c": c[idx].float(), "d": d[idx].float()}  # caches may be half precision
        batch.update({k: v[rank::world] for k, v in draws.items()})
        loss = generator_step(accelerator, model, generator, batch, config)
        update(accelerator, params, optimizer)
        if ema is not None:
            ema.update_parameters(generator.trainable_module())
        return {"loss": loss}

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


def generator_step(accelerator, model, generator, batch: dict[str, torch.Tensor], config: GeneratorTraining):
    """Forward and backward of eq. 3 on this process's rows of one step (the optimiser is the caller's).

    ``batch``: ``targets`` (B, ...) :meth:`CafeGenerator.target_parameters` of the targets y, ``c``
    (B, clip_dim), ``d`` (B, N, dino_dim) and :meth:`CafeGenerator.training_draws`' ``noise``,
    ``timesteps``, ``keep_c``, ``keep_d`` (and ``latent_noise``), rows aligned; ``model`` is
    ``generator`` as ``accelerator.prepare`` returned it. Eq. 3's loss is a mean over rows, so
    micro-batches weighted by their share of the rows give the batch's gradient. Returns the loss.
    """
    rows = len(batch["targets"])

    def loss_of(part: slice) -> dict[str, torch.Tensor]:
        inputs = {k: v[part] for k, v in batch.items()}
        y = generator.sample_target(inputs.pop("targets"), inputs.pop("latent_noise", None))
        loss = model(y, **inputs, snr_gamma=config.snr_gamma)
        return {"loss": loss * ((part.stop - part.start) / rows)}

    return backward_in_parts(accelerator, model, parts_of(rows, config.compute.micro_batch_size), loss_of)["loss"]


def _ema(module: torch.nn.Module, decay: float | None):
    """torch's exponential moving average of ``module``'s parameters (a copy), or None."""
    if decay is None:
        return None
    if not 0.0 < decay < 1.0:
        raise ValueError(f"ema_decay must lie in (0, 1), got {decay}")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(decay))


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
    compute: StepCompute = StepCompute()  # how a step is computed (micro-batches, checkpointing), not what


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
    parts_of(config.batch_size, config.compute.micro_batch_size)  # a bad micro-batch size fails before any work
    parts = assistant.trainable_module()
    params = list(parts.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    assistant.train()
    if config.compute.gradient_checkpointing:
        assistant.enable_gradient_checkpointing()
    model, optimizer = accelerator.prepare(assistant, optimizer)
    rank, world = accelerator.process_index, accelerator.num_processes

    def step(i: int) -> dict:
        idx = step_generator(config.seed, i).choice(n, config.batch_size, replace=False)[rank::world]
        set_lr(optimizer, cosine_lr(i, config.steps, config.lr))
        batch = {
            "prompt_ids": [prompt_ids[j] for j in idx],
            "patches": patches[idx].float(),  # caches may be half precision
            "response_ids": [response_ids[j] for j in idx],
            "targets": targets[idx].float(),
        }
        losses = assistant_step(accelerator, model, batch, config)
        update(accelerator, params, optimizer)
        return losses

    loop = LoopConfig(name="assistant", steps=config.steps, checkpoint_every=config.checkpoint_every, seed=config.seed)
    stats = run_loop(
        loop, step, {"assistant": parts}, optimizer, ckpt_dir, on_checkpoint=on_checkpoint, accelerator=accelerator
    )
    assistant.eval()
    return stats


def assistant_step(accelerator, model, batch: dict, config: AssistantTraining) -> dict[str, torch.Tensor]:
    """Forward and backward of eq. 2 on this process's rows of one step (the optimiser is the caller's).

    ``batch``: ``prompt_ids`` and ``response_ids`` (B lists of token ids), ``patches`` (B, P, patch_dim)
    and ``targets`` (B, clip_dim); ``model`` is the assistant as ``accelerator.prepare`` returned it.
    The LM loss is a mean over response tokens and the embedding loss a mean over rows, so each
    micro-batch's share is weighted by its tokens and its rows: the shares sum to the batch's losses.
    Returns ``loss``, ``lm_loss`` and ``embed_loss``, detached.
    """
    rows = len(batch["prompt_ids"])
    tokens = sum(len(r) for r in batch["response_ids"])

    def loss_of(part: slice) -> dict[str, torch.Tensor]:
        out = model(
            batch["prompt_ids"][part], batch["patches"][part], batch["response_ids"][part], batch["targets"][part]
        )
        lm = out["lm_loss"] * (sum(len(r) for r in batch["response_ids"][part]) / tokens)
        embed = out["embed_loss"] * ((part.stop - part.start) / rows)
        return {
            "loss": lm + (out["loss"] - out["lm_loss"]) * ((part.stop - part.start) / rows),
            "lm_loss": lm,
            "embed_loss": embed,
        }

    return backward_in_parts(accelerator, model, parts_of(rows, config.compute.micro_batch_size), loss_of)
