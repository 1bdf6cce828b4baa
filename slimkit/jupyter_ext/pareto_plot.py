"""The trade-off plot: every catalogued model with both metrics as a point, the Pareto front drawn.

Why matplotlib and why this way: axes, ticks and log scales are what matplotlib is for, and its SVG
output keeps an artist's ``gid`` as the element's id, so each model's point (one ``Line2D`` per
model) carries ``slimkit-select-<percent-encoded id>`` and :class:`SvgView` makes it clickable.
The figure is a bare :class:`matplotlib.figure.Figure` drawn by a canvas of our choosing, never
pyplot: the user's backend (``matplotlib.use``) and open figures are left alone, and nothing
leaks between calls. Output is deterministic (fixed ``svg.hashsalt``, no date).
"""

from __future__ import annotations

import io
from typing import Any, NamedTuple, Sequence

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure

from slimkit.core.catalogue import queries
from slimkit.core.catalogue.migrate import CatalogueError
from slimkit.core.catalogue.store import Catalogue
from slimkit.core.present.svg import element_id, encode_id

FRONT, OTHER, SELECTED = "#1c7ed6", "#adb5bd", "#e8590c"
FRONT_PREFIX = "slimkit-front-"  # the ring round a point on the front (not clickable)
HIGHLIGHT_PREFIX = "slimkit-highlight-"  # the ring round the selected point


def _plain(text: str) -> str:
    """Text matplotlib must not read as mathtext (a ``$`` in a model name)."""
    return text.replace("$", r"\$")


def _message(figure: Figure, text: str) -> Figure:
    figure.text(0.5, 0.5, _plain(text), ha="center", va="center", wrap=True, fontsize=11, color="#495057")
    return figure


def _better(minimize: bool) -> str:
    return "lower is better" if minimize else "higher is better"


def _wide(values: list[float]) -> bool:
    """Whether a log scale reads better: all positive and spanning at least 100x."""
    return bool(values) and min(values) > 0 and max(values) >= 100 * min(values)


class Dot(NamedTuple):
    """One model's point: its id (made clickable), the label written beside it, x and y."""

    id: str
    label: str
    x: float
    y: float


def draw_points(figure: Figure, points: Sequence[Dot], front: Sequence[Dot], kx: str, ky: str, *,
                minimize_x: bool = True, minimize_y: bool = True, chosen: str | None = None,
                title: str = "") -> Figure:
    """Draw ``points`` with the ``front`` (a subset, in x order) ringed and joined, ``chosen``
    highlighted: the picture of :func:`pareto_figure`, for any points (a search's trials too)."""
    axes = figure.add_subplot()
    on_front = {p.id for p in front}
    if len(front) > 1:
        axes.step([p.x for p in front], [p.y for p in front], where="post" if minimize_x else "pre",
                  color=FRONT, linewidth=1.5, alpha=0.8, zorder=1, label="Pareto front")
    for p in front:
        axes.plot([p.x], [p.y], linestyle="none", marker="o", markersize=14, markerfacecolor="none",
                  markeredgecolor=FRONT, markeredgewidth=1.5, zorder=2, gid=FRONT_PREFIX + encode_id(p.id))
    for p in points:
        axes.plot([p.x], [p.y], linestyle="none", marker="o", markersize=9, zorder=3,
                  color=FRONT if p.id in on_front else OTHER, markeredgecolor="#343a40",
                  markeredgewidth=0.6, gid=element_id(p.id))
        axes.annotate(_plain(p.label), (p.x, p.y), xytext=(7, 6), textcoords="offset points", fontsize=8,
                      color="#212529", zorder=4)
        if p.id == chosen:
            axes.plot([p.x], [p.y], linestyle="none", marker="o", markersize=18, markerfacecolor="none",
                      markeredgecolor=SELECTED, markeredgewidth=2.5, zorder=2,
                      gid=HIGHLIGHT_PREFIX + encode_id(p.id))
    if _wide([p.x for p in points]):
        axes.set_xscale("log")
    if _wide([p.y for p in points]):
        axes.set_yscale("log")
    axes.set_xlabel(_plain(f"{kx} ({_better(minimize_x)})"))
    axes.set_ylabel(_plain(f"{ky} ({_better(minimize_y)})"))
    axes.set_title(_plain(title), fontsize=10)
    axes.grid(True, linewidth=0.4, alpha=0.5)
    axes.margins(0.12)
    return figure


def pareto_figure(cat: Catalogue, x: str, y: str, *, minimize_x: bool = True, minimize_y: bool = True,
                  selected: str | None = None, size: tuple[float, float] = (6.4, 4.4)) -> Figure:
    """The figure behind :func:`pareto_svg` and :func:`pareto_png` (for callers that style it further)."""
    figure = Figure(figsize=size, layout="constrained")
    try:
        keys = queries.metric_keys(cat)
        kx, ky = queries.resolve_key(x, keys), queries.resolve_key(y, keys)
        front, points = queries.pareto(cat, kx, ky, minimize_x, minimize_y)
    except CatalogueError as error:
        return _message(figure, str(error))
    if not points:
        return _message(figure, f"no model has both {kx} and {ky} recorded yet:\nevaluate models to plot them")
    chosen = None
    if selected:
        try:
            chosen = cat.resolve(selected).id
        except CatalogueError:
            chosen = selected
    dots = [Dot(p.model.id, p.model.label, p.x, p.y) for p in points]
    return draw_points(figure, dots, [Dot(p.model.id, p.model.label, p.x, p.y) for p in front], kx, ky,
                       minimize_x=minimize_x, minimize_y=minimize_y, chosen=chosen,
                       title=f"{len(front)} of {len(points)} model(s) on the Pareto front")


def pareto_svg(cat: Catalogue, x: str, y: str, *, minimize_x: bool = True, minimize_y: bool = True,
               selected: str | None = None, **options: Any) -> str:
    """The Pareto plot of metric ``x`` against metric ``y`` as an SVG string.

    ``x``/``y``: metric keys as :func:`queries.pareto` takes them (``perplexity``,
    ``size.sparsity``, the model columns ``params``/``size``). Each model's point has the id
    ``slimkit-select-<percent-encoded model id>``; points on the front also get a ring with id
    ``slimkit-front-<...>``, the ``selected`` model (id, prefix or name) one ``slimkit-highlight-<...>``.
    With no model having both values, or an unknown metric, the picture is that message.
    """
    return figure_svg(pareto_figure(cat, x, y, minimize_x=minimize_x, minimize_y=minimize_y, selected=selected,
                                    **options))


def figure_svg(figure: Figure) -> str:
    """A figure as a deterministic SVG string (text as text, stable ids, no date)."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "slimkit"}):
        FigureCanvasSVG(figure).print_svg(buffer, metadata={"Date": None})
    return buffer.getvalue()


def pareto_png(cat: Catalogue, x: str, y: str, *, minimize_x: bool = True, minimize_y: bool = True,
               selected: str | None = None, dpi: int = 120, **options: Any) -> bytes:
    """The same plot as PNG bytes, for static export (reports, nbconvert)."""
    figure = pareto_figure(cat, x, y, minimize_x=minimize_x, minimize_y=minimize_y, selected=selected, **options)
    buffer = io.BytesIO()
    FigureCanvasAgg(figure)  # attaches itself: savefig then draws with Agg, whatever the user's backend
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
