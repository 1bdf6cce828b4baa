"""Work off the kernel's main thread, with progress and cancellation.

A compression run takes seconds to hours; run on the main thread it would block the kernel, and
with it every widget (a Cancel button could never be clicked). :class:`BackgroundRun` runs the
work in a daemon thread and hands it a progress callback. Cancelling sets a flag that the next
progress report turns into :class:`~slimkit.core.errors.RunCancelled`, raised inside the run: the
runner then records the run as failed and writes nothing (derived models are saved and
catalogued only when every step is done), so a cancelled run leaves no half-made model behind.
Methods report progress per block, window or training step, which bounds how long a cancel takes.

ipywidgets' trait updates may be sent from the worker thread (ipykernel serialises messages on
its IOPub thread), so the callbacks may touch widgets directly.
"""

from __future__ import annotations

import threading
import time
import traceback
from typing import Any, Callable

from slimkit.core.contracts import ProgressEvent
from slimkit.core.errors import RunCancelled

Work = Callable[[Callable[[ProgressEvent], None]], Any]


class BackgroundRun:
    """``work(progress)`` in a daemon thread; ``state`` is idle, running, done, failed or cancelled.

    :param on_event: called (in the worker thread) with each :class:`ProgressEvent`.
    :param on_finish: called (in the worker thread) once the run ended, with this object.
    """

    def __init__(self, work: Work, *, on_event: Callable[[ProgressEvent], None] | None = None,
                 on_finish: Callable[["BackgroundRun"], None] | None = None) -> None:
        self._work, self._on_event, self._on_finish = work, on_event, on_finish
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self.state = "idle"
        self.result: Any = None
        self.error: BaseException | None = None
        self.details = ""  # the traceback of an unexpected error (not shown by default)
        self.events = 0
        self.started = self.ended = 0.0

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def seconds(self) -> float:
        return (self.ended or time.monotonic()) - self.started if self.started else 0.0

    def start(self) -> "BackgroundRun":
        if self._thread is not None:
            raise RuntimeError("this run was started already")
        self.state, self.started = "running", time.monotonic()
        self._thread = threading.Thread(target=self._main, name="slimkit-run", daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Ask the run to stop at its next progress report."""
        self._cancel.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the end; True if it ended."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    def _progress(self, event: ProgressEvent) -> None:
        if self._cancel.is_set():
            raise RunCancelled("cancelled by the user")
        self.events += 1
        if self._on_event is not None:
            self._on_event(event)

    def _main(self) -> None:
        try:
            if self._cancel.is_set():
                raise RunCancelled("cancelled by the user")
            self.result = self._work(self._progress)
            self.state = "done"
        except RunCancelled as error:
            self.error, self.state = error, "cancelled"
        except BaseException as error:  # shown in the panel; the thread must not die silently
            self.error, self.state = error, "failed"
            self.details = traceback.format_exc()
        finally:
            self.ended = time.monotonic()
            if self._on_finish is not None:
                try:
                    self._on_finish(self)
                except Exception:  # a broken display must not hide the run's own outcome
                    self.details += "\n" + traceback.format_exc()
