"""Starting N ranks of a module on this machine (what ``runtime: {ranks: N}`` and ``--nproc N`` do).

Each rank is ``python -m MODULE <arguments>`` with the environment ``torchrun`` gives its workers
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``),
so it joins the others exactly as under ``torchrun``, which remains the way to span several
machines. What this adds is one clear report: rank 0's output is the run's (or handed line by line
to the caller), the other ranks' is kept back, and when a rank fails the others are stopped
(SIGTERM, then SIGKILL after a grace period) and the rank that failed first is named, with its last
error line.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

GRACE_S = 30.0  # how long a rank has to stop after SIGTERM before it is killed


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now (the rendezvous of this machine's ranks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def launch(nproc: int, module: str, arguments: Sequence[str], *, echo: Callable[[str], None] = print,
           on_line: Callable[[str], None] | None = None) -> int:
    """Run ``python -m MODULE *arguments`` as ``nproc`` ranks; the exit code of the run (0 when
    every rank succeeded, else the first failed rank's). ``on_line``: called (in this thread) with
    each line rank 0 prints on its standard output, instead of letting it through; if it raises,
    the ranks are stopped and the exception goes on."""
    port = free_port()
    base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(nproc),
            "LOCAL_WORLD_SIZE": str(nproc), "GROUP_RANK": "0", "ROLE_RANK": "0", "ROLE_WORLD_SIZE": str(nproc),
            "TORCHELASTIC_RUN_ID": f"slimkit-{port}"}
    command = [sys.executable, "-m", module, *arguments]
    lines: queue.Queue[str] = queue.Queue()
    readers: list[threading.Thread] = []
    with tempfile.TemporaryDirectory(prefix="slimkit-ranks-") as logs:
        errors = [Path(logs) / f"rank{rank}.err" for rank in range(nproc)]
        processes: list[subprocess.Popen[bytes]] = []
        try:
            with _terminated_as_interrupt():
                for rank in range(nproc):
                    env = {**base, "RANK": str(rank), "LOCAL_RANK": str(rank)}
                    if rank == 0:  # rank 0 speaks for the run: its output as a single run's
                        processes.append(subprocess.Popen(
                            command, env=env, stdout=subprocess.PIPE if on_line is not None else None))
                        if on_line is not None:
                            readers.append(threading.Thread(target=_read_lines, args=(processes[0], lines),
                                                            daemon=True))
                            readers[0].start()
                    else:
                        with open(errors[rank], "wb") as err:
                            processes.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                                              stderr=err))
                failed = _wait(processes, lambda: _drain(lines, on_line))
                for reader in readers:  # what rank 0 printed last, before it exited
                    reader.join(timeout=30)
                _drain(lines, on_line)
        except BaseException:
            _stop(processes)
            raise
        if failed is None:
            return 0
        rank, code = failed
        if rank == 0 and code > 0:  # rank 0 said what went wrong, as a single run would have
            return code
        line = _last_line(errors[rank]) if rank else ""
        line = line.removeprefix("Error: ") if line.startswith("Error: ") else ""  # its own error line, if any
        how = f"exit code {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
        echo(f"rank {rank} of {nproc} failed ({how}{': ' + line if line else ''}); the other ranks were stopped")
        return code if code > 0 else 1


def _read_lines(process: subprocess.Popen[bytes], lines: "queue.Queue[str]") -> None:
    assert process.stdout is not None
    for raw in process.stdout:
        lines.put(raw.decode(errors="replace").rstrip("\n"))


def _drain(lines: "queue.Queue[str]", on_line: Callable[[str], None] | None) -> None:
    while on_line is not None:
        try:
            line = lines.get_nowait()
        except queue.Empty:
            return
        on_line(line)


@contextlib.contextmanager
def _terminated_as_interrupt() -> Iterator[None]:
    """In the main thread, a SIGTERM to this launcher stops its ranks as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _wait(processes: list[subprocess.Popen[bytes]], between: Callable[[], None]) -> tuple[int, int] | None:
    """Wait for every rank; at the first failure stop the rest and return ``(rank, code)``."""
    while True:
        between()
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
