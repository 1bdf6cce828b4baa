"""Terminal output for the CLI: tables and progress bars (rich, on stderr for progress).

Numbers, sizes, ratios and ids are written by :mod:`slimkit.core.present.format`, as in notebooks
and the panel; this module only lays them out for a terminal.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any, Iterable, Sequence

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from slimkit.core.contracts import ProgressEvent
from slimkit.core.present.format import number


def console() -> Console:
    # Piped output (files, notebooks, tests) gets a wide fixed width instead of rich's 80 columns.
    return Console() if sys.stdout.isatty() else Console(width=160)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A table on stdout: numbers as :func:`~slimkit.core.present.format.number` writes them, text as
    given (pre-formatted values are text); a column of numbers only is right-aligned."""
    cells = [[number(cell) for cell in row] for row in rows]
    grid = Table(title=title, title_justify="left", header_style="bold")
    for index, column in enumerate(columns):
        numeric = index > 0 and all(_NUMBER.match(row[index]) for row in cells if row[index])
        grid.add_column(column, justify="right" if numeric else "left")
    for row in cells:
        grid.add_row(*row)
    console().print(grid)


_NUMBER = re.compile(r"^[x-]?[\d.,]+(e[+-]?\d+)?( ?(%|s|B|KiB|MiB|GiB))?$|^-$|^nan$")  # right-aligned cells


class ProgressBars:
    """A :data:`~slimkit.core.contracts.ProgressCallback` drawing one bar per stage on stderr."""

    def __init__(self, enabled: bool = True) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=Console(stderr=True), transient=True, disable=not enabled,
        )
        self._tasks: dict[str, Any] = {}
        self._done: dict[str, int] = {}

    def __enter__(self) -> "ProgressBars":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)  # type: ignore[arg-type]

    def __call__(self, event: ProgressEvent) -> None:
        if event.total == 0:  # a note (what a run expects to cost, how it went so far): a line of its own
            if event.message:
                self._progress.console.print(f"{event.stage}: {event.message}", highlight=False)
            return
        task = self._tasks.get(event.stage)
        if task is None or event.done < self._done.get(event.stage, 0):  # a new pass of the stage
            task = self._progress.add_task(event.stage, total=event.total)
            self._tasks[event.stage] = task
        self._done[event.stage] = event.done
        self._progress.update(task, completed=event.done, total=event.total)
