"""``slimkit run --nproc N``: start N ranks of the same command on this machine.

Each rank is ``python -m slimkit <the same arguments>`` with the environment ``torchrun`` gives its
workers (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``), so a rank runs exactly what ``torchrun --nproc_per_node=N -m slimkit run ...``
would run; ``torchrun`` remains the way to span several machines. What this adds is one clear
report: rank 0 prints as a single run would, the other ranks' output is kept back, and when a rank
fails the others are stopped (SIGTERM, then SIGKILL after a grace period) and the failed ranks'
last error lines are printed, one each.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

GRACE_S = 30.0  # how long a rank has to stop after SIGTERM before it is killed


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now (the rendezvous of this machine's ranks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def without_nproc(arguments: Sequence[str]) -> list[str]:
    """``arguments`` less ``--nproc N`` / ``--nproc=N`` (each rank is one process)."""
    kept: list[str] = []
    skip = False
    for argument in arguments:
        if skip:
            skip = False
        elif argument == "--nproc":
            skip = True
        elif not argument.startswith("--nproc="):
            kept.append(argument)
    return kept


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def launch(nproc: int, arguments: Sequence[str], *, echo=print) -> int:  # type: ignore[no-untyped-def]
    """Run ``python -m slimkit *arguments`` as ``nproc`` ranks; the exit code of the run (0 when
    every rank succeeded, else the first failed rank's)."""
    port = free_port()
    base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(nproc),
            "LOCAL_WORLD_SIZE": str(nproc), "GROUP_RANK": "0", "ROLE_RANK": "0", "ROLE_WORLD_SIZE": str(nproc),
            "TORCHELASTIC_RUN_ID": f"slimkit-{port}"}
    command = [sys.executable, "-m", "slimkit", *arguments]
    with tempfile.TemporaryDirectory(prefix="slimkit-ranks-") as logs:
        errors = [Path(logs) / f"rank{rank}.err" for rank in range(nproc)]
        processes: list[subprocess.Popen[bytes]] = []
        try:
            for rank in range(nproc):
                env = {**base, "RANK": str(rank), "LOCAL_RANK": str(rank)}
                if rank == 0:  # rank 0 speaks for the run: its output as a single run's
                    processes.append(subprocess.Popen(command, env=env))
                else:
                    with open(errors[rank], "wb") as err:
                        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err))
            failed = _wait(processes)
        except KeyboardInterrupt:
            _stop(processes)
            raise
        if failed is None:
            return 0
        rank, code = failed
        if rank == 0 and code > 0:  # rank 0 said what went wrong, as a single run would have
            return code
        line = _last_line(errors[rank]) if rank else ""
        if line:
            echo(f"rank {rank}: {line}")
        how = f"exit code {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
        echo(f"error: rank {rank} of {nproc} failed ({how}); the other ranks were stopped")
        return code if code > 0 else 1


def _wait(processes: list[subprocess.Popen[bytes]]) -> tuple[int, int] | None:
    """Wait for every rank; at the first failure stop the rest and return ``(rank, code)``."""
    while True:
        running = False
        for rank, process in enumerate(processes):
            code = process.poll()
            if code is None:
                running = True
            elif code != 0:
                _stop(processes)
                return rank, code
        if not running:
            return None
        time.sleep(0.1)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
