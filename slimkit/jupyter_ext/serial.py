"""One widget callback at a time.

ipykernel 7 with JupyterLab 4.6 handles widget messages on kernel *subshell* threads, so two
callbacks can run at once: a Compare click was handled while the click that selected a model was
still redrawing, and compared the model selected before it (seen in the browser tests). Every
slimkit widget callback therefore runs under one re-entrant lock (:func:`serialised`), which
makes the handlers behave as they would on a single thread; the long work itself (a run) is in
its own thread and never holds the lock.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
LOCK = threading.RLock()


def serialised(handler: F) -> F:
    """``handler`` wrapped to run under :data:`LOCK`."""

    @functools.wraps(handler)
    def run(*args: Any, **kwargs: Any) -> Any:
        with LOCK:
            return handler(*args, **kwargs)

    return run  # type: ignore[return-value]
