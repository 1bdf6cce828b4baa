"""Where a search's tasks run: in this process, in a pool of local worker processes, or on Ray.

Every executor takes tasks (:mod:`slimkit.core.search.tasks`) under a key and hands back, one at a
time, each task's result or its :class:`Failure`. A failure says whether the worker itself died
(killed, out of memory, a crash in native code): the search retries such a task once, while a task
that raised is not retried. Workers write to the catalogue themselves, by URL.
"""

from __future__ import annotations

import multiprocessing
import os
import traceback
from collections import deque
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Protocol

from slimkit.core.contracts import ProgressEvent
from slimkit.core.search.tasks import Failure, failure_of, run_task

#: (task key, event) from a task's progress, forwarded by the executor
OnProgress = Callable[[Any, ProgressEvent], None]


class Executor(Protocol):
    slots: int

    def submit(self, key: Any, task: Any) -> None: ...

    def next_done(self) -> tuple[Any, Any]: ...

    def close(self) -> None: ...


class InlineExecutor:
    """Runs each task in this process when its result is asked for, with the caller's plugins
    (``host``); progress reaches the caller."""

    slots = 1

    def __init__(self, on_progress: OnProgress | None = None, host: Any = None) -> None:
        self._queue: deque[tuple[Any, Any]] = deque()
        self._on_progress = on_progress
        self._host = host

    def submit(self, key: Any, task: Any) -> None:
        self._queue.append((key, task))

    def next_done(self) -> tuple[Any, Any]:
        key, task = self._queue.popleft()
        report = self._on_progress
        forward = (lambda event: report(key, event)) if report is not None else None
        try:
            return key, run_task(task, forward, self._host)
        except Exception as error:  # the search goes on; KeyboardInterrupt stops it
            return key, failure_of(error)

    def close(self) -> None:
        self._queue.clear()


def _worker_main(connection: Connection, threads: int) -> None:  # pragma: no cover - in a worker process
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the search's: it stops the workers itself

    def interrupted(*_: object) -> None:  # stopped by the search: the run records itself as failed
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    import torch

    torch.set_num_threads(threads)
    while True:
        try:
            message = connection.recv()
        except EOFError:
            return
        if message is None:
            return
        key, task = message

        def forward(event: ProgressEvent, key: Any = key) -> None:
            connection.send(("progress", key, event))

        try:
            result: Any = run_task(task, forward)
        except Exception as error:
            if os.environ.get("SLIMKIT_DEBUG"):
                traceback.print_exc()
            result = failure_of(error)
        connection.send(("done", key, result))


class _Worker:
    def __init__(self, context: Any, threads: int) -> None:
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, threads), daemon=True)
        self.process.start()
        child.close()
        self.key: Any = None
        self.busy = False


class PoolExecutor:
    """Local worker processes (spawned, each with its share of the threads), one task at a time
    each. A worker that dies fails only the task it held; a fresh worker takes its place."""

    def __init__(self, workers: int, threads: int | None = None, on_progress: OnProgress | None = None) -> None:
        import torch

        self.slots = workers
        self._threads = threads or max(1, torch.get_num_threads() // workers)
        self._context = multiprocessing.get_context("spawn")
        self._workers = [_Worker(self._context, self._threads) for _ in range(workers)]
        self._waiting: deque[tuple[Any, Any]] = deque()
        self._on_progress = on_progress

    def submit(self, key: Any, task: Any) -> None:
        self._waiting.append((key, task))
        self._dispatch()

    def _dispatch(self) -> None:
        for index in range(len(self._workers)):
            if not self._waiting:
                return
            if self._workers[index].busy:
                continue
            key, task = self._waiting.popleft()
            for _ in range(2):  # an idle worker that died (killed, out of memory) is replaced, not used
                worker = self._workers[index]
                try:
                    if not worker.process.is_alive():
                        raise BrokenPipeError
                    worker.connection.send((key, task))
                    break
                except OSError:  # BrokenPipeError included
                    worker.connection.close()
                    self._workers[index] = _Worker(self._context, self._threads)
            else:  # a fresh worker that cannot take a task: leave it to the caller, as a failure of the task
                raise RuntimeError("cannot start a search worker process")
            worker.key, worker.busy = key, True

    def next_done(self) -> tuple[Any, Any]:
        while True:
            busy = [w for w in self._workers if w.busy]
            if not busy:
                raise RuntimeError("no task is running")
            ready = wait([w.connection for w in busy] + [w.process.sentinel for w in busy])
            for worker in busy:
                if worker.connection in ready:
                    try:
                        kind, key, payload = worker.connection.recv()
                    except (EOFError, OSError):
                        return self._replace(worker)
                    if kind == "progress":
                        if self._on_progress is not None:
                            self._on_progress(key, payload)
                        continue
                    worker.busy, worker.key = False, None
                    self._dispatch()
                    return key, payload
                if worker.process.sentinel in ready:
                    return self._replace(worker)

    def _replace(self, worker: _Worker) -> tuple[Any, Any]:
        worker.process.join(timeout=5)
        code = worker.process.exitcode
        key = worker.key
        index = self._workers.index(worker)
        worker.connection.close()
        self._workers[index] = _Worker(self._context, self._threads)
        self._dispatch()
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        return key, Failure(f"its worker process died ({how})", died=True)

    def close(self) -> None:
        self._waiting.clear()
        for worker in self._workers:
            if worker.busy:
                worker.process.terminate()
            else:
                try:
                    worker.connection.send(None)
                except OSError:
                    pass
        for worker in self._workers:
            worker.process.join(timeout=10)
            if worker.process.is_alive():
                worker.process.kill()
            worker.connection.close()


def make_executor(kind: str, workers: int = 2, address: str | None = None,
                  on_progress: OnProgress | None = None, host: Any = None) -> Executor:
    """``inline`` (with ``host``'s plugins), ``pool`` (``workers`` processes) or ``ray`` (at
    ``address``: ``auto``, HOST:PORT, or ``local`` to start a cluster of ``workers`` CPUs in this
    machine for the search). Workers elsewhere load the installed plugins."""
    if kind == "inline":
        return InlineExecutor(on_progress, host)
    if kind == "pool":
        return PoolExecutor(workers, on_progress=on_progress)
    if kind == "ray":
        from slimkit.core.search.ray_executor import RayExecutor

        return RayExecutor(address or "auto", workers)
    raise ValueError(f"unknown executor {kind!r}: inline, pool or ray")
