"""The Search tab's pictures of a sweep or search: its trials as a table and its front as a plot.

Plain functions of plain data (the search's :class:`~slimkit.core.search.trials.Trial` objects and
:class:`~slimkit.core.search.goals.Goals`), so they are tested without widgets. Both mark each
trial that made a model with ``slimkit-select-<percent-encoded model id>``, as the lineage
drawing and the Pareto plot do, so an :class:`~slimkit.jupyter_ext.svgview.SvgView` showing them
(the table is HTML, which the view shows as well as SVG) turns a click on a row or a point into
that trial's model id.
"""

from __future__ import annotations

import html
from typing import Any, Iterable, Mapping, Sequence

from matplotlib.figure import Figure

from slimkit.core.present.format import metric_value, short_id
from slimkit.core.present.svg import element_id
from slimkit.jupyter_ext.pareto_plot import Dot, _message, draw_points, figure_svg


def _objective_keys(goals: Any) -> list[tuple[str, bool]]:
    return [(o.key, o.minimize) for o in goals.objectives] if goals is not None else []


def _value(trial: Any, key: str) -> float | None:
    value = trial.values().get(key)
    return None if value is None else float(value)


def trials_table(trials: Iterable[Any], goals: Any, front: Iterable[int] = (), selected: str | None = None) -> str:
    """The trials, one row each: number, recipe, status, each objective, feasible, model.

    Rows of trials on the ``front`` (trial numbers) are marked ``slimkit-front-row`` and a star;
    the row of the ``selected`` model ``slimkit-selected-row``.
    """
    keys = _objective_keys(goals)
    on_front = set(front)
    head = "".join(f"<th>{html.escape(k)} {'↓' if low else '↑'}</th>" for k, low in keys)
    rows = []
    for trial in trials:
        cells = [str(trial.number) + (" ★" if trial.number in on_front else ""), trial.label,
                 trial.status + (f": {trial.error}" if trial.error else "")]
        for key, _ in keys:
            value = _value(trial, key)
            cells.append("" if value is None else metric_value(key, value))
        cells.append({True: "yes", False: "no", None: ""}[trial.feasible])
        cells.append(short_id(trial.model_id) if trial.model_id else "")
        classes = ["slimkit-trial"] + (["slimkit-front-row"] if trial.number in on_front else []) + (
            ["slimkit-selected-row"] if selected and trial.model_id == selected else [])
        mark = f" id='{element_id(trial.model_id)}'" if trial.model_id else ""
        rows.append(f"<tr class='{' '.join(classes)}'{mark}>"
                    + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    if not rows:
        rows.append(f"<tr><td colspan='{5 + len(keys)}'><i>no trials yet</i></td></tr>")
    return ("<table class='slimkit-table slimkit-trials'><tr><th>#</th><th>recipe</th><th>status</th>"
            f"{head}<th>feasible</th><th>model</th></tr>" + "".join(rows) + "</table>")


def front_figure(trials: Sequence[Any], goals: Any, front: Sequence[Any], *, selected: str | None = None,
                 size: tuple[float, float] = (6.4, 4.4)) -> Figure:
    """The finished trials on the first two objectives, the ``front`` (trials) ringed and joined."""
    figure = Figure(figsize=size, layout="constrained")
    keys = _objective_keys(goals)
    if not keys:
        return _message(figure, "no objectives: add one, e.g. minimize perplexity")
    if len(keys) == 1:  # one objective: plotted against the trial number
        keys = [("trial", True)] + keys
    (kx, low_x), (ky, low_y) = keys[0], keys[1]

    def dot(trial: Any) -> Dot | None:
        x = float(trial.number) if kx == "trial" else _value(trial, kx)
        y = _value(trial, ky)
        if x is None or y is None or not trial.model_id:
            return None
        return Dot(trial.model_id, f"#{trial.number}", x, y)

    points = [d for d in (dot(t) for t in trials if t.finished) if d is not None]
    if not points:
        return _message(figure, "no finished trial yet: the front appears as trials finish")
    best = sorted((d for d in (dot(t) for t in front) if d is not None), key=lambda d: (d.x, d.y))
    if not low_x:
        best.reverse()
    return draw_points(figure, points, best, kx, ky, minimize_x=low_x, minimize_y=low_y, chosen=selected,
                       title=f"{len(best)} of {len(points)} trial(s) on the front")


def front_svg(trials: Sequence[Any], goals: Any, front: Sequence[Any], *, selected: str | None = None) -> str:
    """:func:`front_figure` as SVG; each trial's point has its model's ``slimkit-select-`` id."""
    return figure_svg(front_figure(trials, goals, front, selected=selected))


def live_front(trials: Sequence[Any], goals: Any, base: Mapping[str, float] | None) -> list[Any]:
    """The front of the trials so far, as the search will judge it (without the full evaluation
    of a proxy, which comes at the end). Without the input model's metrics yet, constraints
    relative to it cannot be judged: the front is then on the objectives alone."""
    from slimkit.core.search.goals import Goals
    from slimkit.core.search.trials import front

    if goals is None:
        return []
    judged = goals if base is not None else Goals(goals.objectives, ())
    return front(judged, trials, base or {})
