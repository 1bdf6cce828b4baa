"""The front as a picture (matplotlib, ``slimkit[search]``): every trial, the front, the input model."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from slimkit.core.errors import SlimkitError

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.search.driver import SearchResult


def _axis(key: str, minimize: bool) -> str:
    unit = " (bytes)" if key == "size" else ""
    return f"{key}{unit}, {'lower' if minimize else 'higher'} is better"


def plot_front(result: "SearchResult", path: str | os.PathLike[str]) -> None:
    """Write the first two objectives of every finished trial (one objective: against the trial
    number) to ``path`` (PNG, SVG or PDF by its suffix), the front joined and labelled."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError:
        raise SlimkitError("--plot needs matplotlib: pip install 'slimkit[search]'") from None
    goals = result.goals
    if goals is None or not goals.objectives:
        raise SlimkitError("--plot needs objectives to draw")
    objectives = goals.objectives[:2]
    full = any(t.full_metrics for t in result.trials)

    def coords(values: dict[str, float], number: int) -> tuple[float, float] | None:
        picked = [values[o.key] for o in objectives if values.get(o.key) is not None]
        if len(picked) < len(objectives):
            return None
        return (picked[0], picked[1]) if len(picked) == 2 else (float(number), picked[0])

    figure = Figure(figsize=(7, 4.5), dpi=110)
    axes = figure.add_subplot()
    on_front = {t.number for t in result.front}
    for feasible, colour, label in ((True, "#4c78a8", "feasible"), (False, "#bbbbbb", "breaks a constraint")):
        drawn = [coords(t.values() if full else t.metrics, t.number) for t in result.trials
                 if t.finished and bool(t.feasible) == feasible and t.number not in on_front]
        points = [p for p in drawn if p is not None]
        if points:
            axes.scatter([p[0] for p in points], [p[1] for p in points], s=22, color=colour, label=label, zorder=2)
    placed = [(t, coords(t.values() if full else t.metrics, t.number)) for t in result.front]
    front = [(t, p) for t, p in placed if p is not None]
    if front:
        xs, ys = [p[0] for _, p in front], [p[1] for _, p in front]
        axes.plot(xs, ys, "-o", color="#e45756", label="front", zorder=3)
        for trial, (x, y) in front:
            axes.annotate(f"#{trial.number}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    base = coords(result.base_full if full else result.base_metrics, 0)
    if base is not None and len(objectives) == 2:
        axes.scatter([base[0]], [base[1]], marker="*", s=120, color="#54a24b", label="input model", zorder=4)
    if len(objectives) == 2:
        axes.set_xlabel(_axis(objectives[0].key, objectives[0].minimize))
        axes.set_ylabel(_axis(objectives[1].key, objectives[1].minimize))
    else:
        axes.set_xlabel("trial")
        axes.set_ylabel(_axis(objectives[0].key, objectives[0].minimize))
    axes.set_title(f"{result.kind} {result.name or ''}: {sum(t.finished for t in result.trials)} trials, "
                   f"front of {len(result.front)}", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    from pathlib import Path

    from slimkit.core.atomic import write_staged

    target = Path(path)
    suffix = target.suffix.lstrip(".").lower() or "png"
    write_staged(target, "file", lambda staging: figure.savefig(staging, format=suffix),
                 what="cannot write the plot to")
