"""A progress bar with its line of text, fed from a background run: the Run and Export tabs' row.

Events arrive on the worker thread; at most ~10 a second (and always the last of a stage) are
handed to the kernel's main thread, where widgets are changed (see the panel's ``_on_main``).
"""

from __future__ import annotations

import time
from typing import Callable

import ipywidgets as w

from slimkit.core.contracts import ProgressEvent
from slimkit.core.present.format import duration

PROGRESS_INTERVAL_S = 0.1  # at most this often a progress update goes to the front end


class ProgressRow:
    """``bar`` and ``text`` for one kind of background work (``css`` marks the bar for styling
    and browser tests). ``running`` says whether the work is still going: a late event of work
    that has ended is dropped."""

    def __init__(self, css: str, on_main: Callable[[Callable[[], None]], None], running: Callable[[], bool]) -> None:
        self.bar = w.IntProgress(value=0, min=0, max=1, description="idle")
        self.bar.add_class(css)
        self.text = w.Label()
        self._on_main, self._running = on_main, running
        self._last_push = 0.0

    def start(self, text: str) -> None:
        self.bar.value, self.bar.max, self.bar.bar_style = 0, 1, ""
        self.bar.description = "starting"
        self.text.value = text

    def cancelling(self) -> None:
        self.bar.description = "cancelling"

    def event(self, event: ProgressEvent) -> None:
        """Called on the worker thread for every event."""
        now = time.monotonic()
        if now - self._last_push < PROGRESS_INTERVAL_S and event.done < event.total and event.total:
            return  # the front end needs no more than ~10 updates a second
        self._last_push = now
        self._on_main(lambda: self._show(event))

    def _show(self, event: ProgressEvent) -> None:
        if not self._running():
            return
        if event.total == 0:  # a note (a run's expected cost, its first block's measure): text only
            self.text.value = f"{event.stage}: {event.message}"[:160]
            return
        self.bar.max = max(1, event.total)
        self.bar.value = min(event.done, self.bar.max)
        self.bar.description = event.stage[:12]
        self.text.value = f"{event.stage} {event.done}/{event.total} {event.message}"[:120]

    def finished(self, state: str, seconds: float, unchanged: str) -> None:
        """Show how the work ended: ``done``, or ``failed``/``cancelled`` with ``unchanged`` (what
        the user can rely on, e.g. "nothing was written")."""
        if state == "done":
            self.bar.max, self.bar.value, self.bar.bar_style = 1, 1, "success"
            self.bar.description = "done"
            self.text.value = f"finished in {duration(seconds)}"
        else:
            self.bar.bar_style = "danger" if state == "failed" else "warning"
            self.bar.description = state
            self.text.value = f"{state} after {duration(seconds)}; {unchanged}"
