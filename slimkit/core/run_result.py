"""What a recipe run gives back: the derived model, where it was saved, its steps and metrics.

Its own module so that the runner and the data-parallel caller
(:mod:`slimkit.core.distributed.spawn`, which rebuilds rank 0's result) both make one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimkit.core.catalogue.entities import StepEntry
from slimkit.core.contracts import CompressionSummary
from slimkit.core.export.result import ExportResult
from slimkit.core.model_io import LoadedModel


@dataclass
class RunResult:
    """What a run produced: the derived model, where it was saved, its steps and metrics."""

    model: LoadedModel
    output: Path | None
    steps: list[StepEntry]
    summaries: list[CompressionSummary]
    before: dict[str, dict[str, float]] = field(default_factory=dict)
    after: dict[str, dict[str, float]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    reused: list[bool] = field(default_factory=list)
    run_id: str | None = None
    #: What the recipe's ``export:`` section wrote, in its order.
    exports: list[ExportResult] = field(default_factory=list)

    @property
    def compression_seconds(self) -> float:
        return sum(step.wall_time_s or 0.0 for step, reused in zip(self.steps, self.reused) if not reused)

    def comparison(self) -> list[tuple[str, float | None, float | None]]:
        """``(evaluator.metric, before, after)`` rows in evaluation order."""
        rows: list[tuple[str, float | None, float | None]] = []
        for evaluator, metrics in self.after.items():
            for metric, value in metrics.items():
                rows.append((f"{evaluator}.{metric}", self.before.get(evaluator, {}).get(metric), value))
        return rows

    def _repr_html_(self) -> str:  # notebooks: steps and metrics before/after
        from slimkit.core.present.html import run_result_html

        return run_result_html(self)
