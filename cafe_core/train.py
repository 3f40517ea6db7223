"""A resumable training loop shared by every model the workbench trains.

Why a loop of our own: each stage must survive being killed (checkpoints written
atomically, resumed bit-for-bit), stop cleanly on a non-finite loss, show progress and
log to MLflow. The model-specific part is a `step(step_index) -> dict of losses` callable
whose randomness is drawn from `step_generator(seed, step)`, so a resumed run sees exactly
the batches and noise an uninterrupted run would have seen.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from . import tracking
from .files import atomic_write_text

logger = logging.getLogger(__name__)

STATE_FILE = "train_state.json"


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def step_generator(seed: int, step: int) -> np.random.Generator:
    """The random stream of one optimizer step: a pure function of (seed, step)."""
    return np.random.default_rng([seed, step])


def step_torch_generator(seed: int, step: int, device: str | torch.device = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(np.random.default_rng([seed, step, 1]).integers(2**62)))
    return g


@dataclass
class LoopConfig:
    name: str  # shown in the progress bar and used for metric names
    steps: int
    checkpoint_every: int
    log_every: int = 50
    seed: int = 0


def _state_tensors(modules: Mapping[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    out = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            out[f"{name}.{key}"] = value.detach().contiguous().cpu()
    return out


def save_checkpoint(
    ckpt_dir: Path,
    step: int,
    modules: Mapping[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer,
    extra: Mapping | None = None,
) -> Path:
    """Write `ckpt_dir/step-N/` atomically (temp dir + rename), then point the state file at it."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = ckpt_dir / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=ckpt_dir, prefix=".tmp-"))
    # Shared-storage tensors (tied weights) must be cloned for safetensors.
    tensors = {k: v.clone() for k, v in _state_tensors(modules).items()}
    save_file(tensors, tmp / "modules.safetensors")
    # The optimizer state is ours (never loaded from outside): torch.save, read back with weights_only.
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    (tmp / "meta.json").write_text(json.dumps({"step": step, **(extra or {})}))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write_text(ckpt_dir / STATE_FILE, json.dumps({"latest": final.name, "step": step}))
    for old in ckpt_dir.glob("step-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(
    ckpt_dir: Path, modules: Mapping[str, torch.nn.Module], optimizer: torch.optim.Optimizer | None
) -> int:
    """Restore the latest complete checkpoint; returns its step (0 when there is none)."""
    state_path = ckpt_dir / STATE_FILE
    if not state_path.is_file():
        return 0
    state = json.loads(state_path.read_text())
    folder = ckpt_dir / state["latest"]
    tensors = load_file(folder / "modules.safetensors")
    for name, module in modules.items():
        prefix = f"{name}."
        sub = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        module.load_state_dict(sub)
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    logger.info("resumed %s from step %d", ckpt_dir, state["step"])
    return int(state["step"])


def run_loop(
    config: LoopConfig,
    step_fn: Callable[[int], Mapping[str, torch.Tensor | float]],
    modules: Mapping[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer,
    ckpt_dir: str | os.PathLike,
    *,
    on_checkpoint: Callable[[int], None] | None = None,
    accelerator=None,
) -> dict[str, float]:
    """Run `step_fn(step)` for steps [resume, config.steps), checkpointing every `checkpoint_every`.

    `step_fn` does forward, backward and optimizer step, and returns its losses (the key
    "loss" is checked for finiteness). Returns the mean of each loss over the last
    `log_every` steps run (empty if nothing was left to run).

    With an `accelerate.Accelerator` of several processes, `step_fn` runs in every process
    on its shard of the batch; losses are averaged across processes before the finiteness
    check (so all processes stop together), and only the main process writes checkpoints.
    """
    main = accelerator is None or accelerator.is_main_process
    ckpt_dir = Path(ckpt_dir)
    start = load_checkpoint(ckpt_dir, modules, optimizer)
    if start >= config.steps:
        return {}
    window: dict[str, list[float]] = {}
    bar = tqdm(
        range(start, config.steps), desc=config.name, initial=start, total=config.steps, mininterval=2.0, disable=not main
    )
    for step in bar:
        raw = step_fn(step)
        if accelerator is not None and accelerator.num_processes > 1:
            raw = {k: accelerator.reduce(torch.as_tensor(v, device=accelerator.device).float(), "mean") for k, v in raw.items()}
        losses = {k: float(v) for k, v in raw.items()}
        if not math.isfinite(losses.get("loss", 0.0)):
            raise TrainingDivergedError(
                f"{config.name}: loss became {losses['loss']} at step {step}; "
                f"the last good checkpoint is kept in {ckpt_dir} (lower the learning rate or check the data)"
            )
        for k, v in losses.items():
            window.setdefault(k, []).append(v)
        done = step + 1
        if done % config.log_every == 0 or done == config.steps:
            means = {k: float(np.mean(v[-config.log_every :])) for k, v in window.items()}
            bar.set_postfix({k: f"{v:.4f}" for k, v in means.items()})
            if main and (done % max(config.log_every, config.steps // 10) == 0 or done == config.steps):
                # Also as a log line: progress bars do not reach logs of papermill or DVC runs.
                logger.info("%s step %d/%d %s", config.name, done, config.steps, " ".join(f"{k}={v:.4f}" for k, v in means.items()))
            if main:
                tracking.log_metrics({f"{config.name}/{k}": v for k, v in means.items()}, step=done)
        if done % config.checkpoint_every == 0 or done == config.steps:
            if main:
                save_checkpoint(ckpt_dir, done, modules, optimizer)
            if accelerator is not None:
                accelerator.wait_for_everyone()
            if on_checkpoint is not None:
                on_checkpoint(done)
    bar.close()
    return {k: float(np.mean(v[-config.log_every :])) for k, v in window.items()}


# --- CAFE's generator G (eq. 3) ------------------------------------------------------------


def cosine_lr(step: int, total: int, peak: float, warmup: int | None = None) -> float:
    """Linear warm-up, then cosine decay to 5% of `peak`; a pure function of the step (resumable)."""
    warmup = warmup if warmup is not None else max(1, total // 20)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def update(accelerator, loss: torch.Tensor, params, optimizer: torch.optim.Optimizer, max_norm: float = 1.0) -> None:
    """One optimiser update under accelerate: backward (gradients averaged over processes), clip, step, clear."""
    accelerator.backward(loss)
    accelerator.clip_grad_norm_(params, max_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@dataclass(frozen=True)
class GeneratorTraining:
    steps: int
    batch_size: int
    lr: float
    drop_p: float = 0.1  # c and d each dropped with this probability (classifier-free guidance)
    weight_decay: float = 0.01
    checkpoint_every: int = 200
    seed: int = 0


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
    params = [p for p in generator.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    model, optimizer = accelerator.prepare(generator, optimizer)
    rank, world = accelerator.process_index, accelerator.num_processes
    images = torch.from_numpy(np.ascontiguousarray(targets))

    def step(i: int) -> dict:
        rng = step_generator(config.seed, i)
        idx = rng.choice(len(targets), config.batch_size, replace=False)
        draws = generator.training_draws((config.batch_size, *_target_shape(generator)), step_torch_generator(config.seed, i), config.drop_p)
        shard = slice(rank, None, world)
        set_lr(optimizer, cosine_lr(i, config.steps, config.lr))
        y = generator.encode_target(images[idx[shard]].permute(0, 3, 1, 2).float() / 255.0)
        loss = model(y, c[idx[shard]], d[idx[shard]], **{k: v[shard] for k, v in draws.items()})
        update(accelerator, loss, params, optimizer)
        return {"loss": loss.detach()}

    loop = LoopConfig(name="generator", steps=config.steps, checkpoint_every=config.checkpoint_every, seed=config.seed)
    trainable = {"unet": generator.unet, "conditioner": generator.conditioner}
    stats = run_loop(loop, step, trainable, optimizer, ckpt_dir, on_checkpoint=on_checkpoint, accelerator=accelerator)
    generator.eval()
    return stats


def _target_shape(generator) -> tuple[int, int, int]:
    cfg = generator.unet.config
    return (cfg.in_channels, cfg.sample_size, cfg.sample_size)


# --- the assistant M (eq. 2) ------------------------------------------------------------------


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
        raise ValueError(f"prompts, responses, patches and targets must align, got {n}, {len(response_ids)}, {len(patches)}, {len(targets)}")
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
        return {"loss": out["loss"].detach(), "lm_loss": out["lm_loss"].detach(), "embed_loss": out["embed_loss"].detach()}

    loop = LoopConfig(name="assistant", steps=config.steps, checkpoint_every=config.checkpoint_every, seed=config.seed)
    stats = run_loop(loop, step, {"assistant": parts}, optimizer, ckpt_dir, on_checkpoint=on_checkpoint, accelerator=accelerator)
    assistant.eval()
    return stats
