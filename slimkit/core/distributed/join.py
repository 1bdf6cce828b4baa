"""Joining the ranks started by ``torchrun`` (or any launcher that sets its environment).

``torchrun`` gives each process ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`join` opens the default process group from them: gloo for CPUs, NCCL
when the run's device is a GPU (each rank on the GPU of its ``LOCAL_RANK``). How long a rank waits
for the others at a collective before it gives up is ``SLIMKIT_DIST_TIMEOUT`` seconds (default
1800: rank 0 evaluates the model before the first block while the others wait).
"""

from __future__ import annotations

import datetime
import os
import sys
from typing import Any, Callable

from slimkit.core.distributed.world import SINGLE, World, current_world, launched_by_torchrun
from slimkit.core.errors import DistributedError
from slimkit.core.failures import first_line

ENV_TIMEOUT = "SLIMKIT_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800


def timeout_seconds() -> float:
    raw = os.environ.get(ENV_TIMEOUT, str(DEFAULT_TIMEOUT_S))
    try:
        value = float(raw)
    except ValueError:
        raise DistributedError(f"{ENV_TIMEOUT}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise DistributedError(f"{ENV_TIMEOUT}={raw!r} must be positive")
    return value


def join(device: Any = None) -> World:
    """The world this process belongs to: the process group already open, else one opened from
    ``torchrun``'s environment, else :data:`SINGLE` (a process started alone)."""
    world = current_world()
    if world.distributed or not launched_by_torchrun():
        return world
    import torch
    import torch.distributed as dist

    kind = torch.device(device).type if device is not None and str(device) != "auto" else "cpu"
    backend = "nccl" if kind == "cuda" else "gloo"
    if kind == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    rank, size = os.environ.get("RANK", "?"), os.environ.get("WORLD_SIZE", "?")
    try:
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_seconds()))
    except (RuntimeError, ValueError, OSError) as error:
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        raise DistributedError(f"rank {rank} of {size} cannot join the others through {where} ({backend}): "
                               f"{first_line(error)[:300]}") from error
    return current_world()


def stop_on_sigterm(world: World) -> Callable[[], None]:
    """Make a launcher's SIGTERM (sent to every rank when one fails) an error of this rank, so that
    the run is recorded as failed and its partial output removed, instead of the process vanishing.
    Returns the function that disarms it once the run is over (a SIGTERM is then ignored: the rank
    is exiting anyway, and an error raised from interpreter shutdown would only print a traceback)."""
    import signal

    def stopped(signum: int, _frame: Any) -> None:
        if sys.exc_info()[0] is not None:  # already failing: let the run record that and clean up
            return
        raise DistributedError(f"rank {world.rank} of {world.size} was stopped by its launcher (signal {signum}), "
                               "because the run was interrupted or another rank failed; nothing was saved")

    def disarm() -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    signal.signal(signal.SIGTERM, stopped)
    return disarm


def leave() -> None:
    """Close the default process group if this process opened one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


__all__ = ["SINGLE", "join", "leave", "stop_on_sigterm", "timeout_seconds"]
