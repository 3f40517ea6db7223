"""Starting N processes on one CPU machine under ``accelerate launch``.

``accelerate launch --cpu --num_processes N`` starts one process unless an MPI hostfile is given
(accelerate 1.x hands ``--cpu`` to its simple launcher), so a "two-process" run on a CPU was
silently one. The torchrun launcher (``--multi_gpu``, which on a machine without GPUs starts N
CPU processes that ``Accelerator()`` joins with the gloo backend) starts them all; each process
then gets one OpenMP thread so N processes do not oversubscribe N cores.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

__all__ = ["cpu_launch"]


def cpu_launch(processes: int, program: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The command and environment that run ``program`` (a script and its arguments, or ``-m
    module ...``) in ``processes`` CPU processes; one process runs it directly."""
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    env = dict(os.environ)
    if processes == 1:
        return [sys.executable, *program], env
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes)]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *program]
    return cmd, env
