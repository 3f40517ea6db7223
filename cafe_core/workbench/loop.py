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

from ..utils.files import atomic_write_text
from . import tracking

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
        range(start, config.steps),
        desc=config.name,
        initial=start,
        total=config.steps,
        mininterval=2.0,
        disable=not main,
    )
    for step in bar:
        raw = step_fn(step)
        if accelerator is not None and accelerator.num_processes > 1:
            raw = {
                k: accelerator.reduce(torch.as_tensor(v, device=accelerator.device).float(), "mean")
                for k, v in raw.items()
            }
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
                logger.info(
                    "%s step %d/%d %s",
                    config.name,
                    done,
                    config.steps,
                    " ".join(f"{k}={v:.4f}" for k, v in means.items()),
                )
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


# --- learning-rate schedule -----------------------------------------------------------------------


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
