"""The panel's pictures of the catalogue: the lineage of the selected model (a drawn graph) and a
Pareto scatter of all models on two chosen metrics (matplotlib). Both are clickable
:class:`~slimkit.jupyter_ext.svgview.SvgView` widgets: clicking a model selects it in the panel.
"""

from __future__ import annotations

from typing import Any, Callable

import ipywidgets as w

from slimkit.jupyter_ext.serial import serialised
from slimkit.jupyter_ext.svgview import SvgView

SIZE_AXES = ("params", "size")  # model columns pareto() takes besides metric keys


def set_choices(dropdown: w.Dropdown, options: list[Any], value: Any) -> None:
    """New options and value for a dropdown, sent to the front end as one update."""
    with dropdown.hold_sync():
        if list(dropdown.options) != list(options):
            dropdown.options = options
        dropdown.value = value


class CatalogueViews:
    """``lineage_box`` and ``pareto_box`` for one catalogue; ``focus(model_id)`` redraws both."""

    def __init__(self, catalogue: Any, on_select: Callable[[str], None] | None = None) -> None:
        self.catalogue = catalogue
        self.focused: str | None = None
        self._on_select = on_select
        self.lineage = SvgView()
        self.lineage.add_class("slimkit-lineage")
        self.lineage_message = w.HTML("<i>run a recipe or pick a catalogue model to see its lineage</i>")
        self.pareto = SvgView()
        self.pareto.add_class("slimkit-pareto")
        self.x = w.Dropdown(description="x", options=list(SIZE_AXES), value="params")
        self.y = w.Dropdown(description="y", options=[])
        self.pareto_message = w.HTML()
        self._setting_axes = False  # refresh() sets both axes, then draws once
        for axis in (self.x, self.y):
            axis.observe(serialised(lambda _: None if self._setting_axes else self.draw_pareto()), names="value")
        for view in (self.lineage, self.pareto):
            view.observe(serialised(self._clicked), names="selected")
        self.lineage_box = w.VBox([self.lineage_message, self.lineage])
        self.pareto_box = w.VBox([w.HBox([self.x, self.y]), self.pareto_message, self.pareto])

    def _clicked(self, change: dict[str, Any]) -> None:
        if change["new"] and change["new"] != self.focused and self._on_select is not None:
            self._on_select(change["new"])

    def refresh(self) -> None:
        """Re-read the metric names, then redraw."""
        from slimkit.core.catalogue import queries

        keys = sorted(queries.metric_keys(self.catalogue))
        choices = list(SIZE_AXES) + keys
        keep_x, keep_y = self.x.value, self.y.value
        preferred = next((k for k in keys if k.endswith("perplexity")), keys[0]) if keys else None
        self._setting_axes = True
        try:
            set_choices(self.x, choices, keep_x if keep_x in choices and keep_x != "params" else (
                "size.nonzero_params" if "size.nonzero_params" in keys else "params"))  # pruning shows on this axis
            set_choices(self.y, keys, keep_y if keep_y in keys else preferred)
        finally:
            self._setting_axes = False
        self.draw_lineage()
        self.draw_pareto()

    def focus(self, model_id: str) -> None:
        if model_id == self.focused:
            return  # drawn already (refresh() draws for the current focus)
        self.focused = model_id
        self.draw_lineage()
        self.draw_pareto()

    def draw_lineage(self) -> None:
        from slimkit.jupyter_ext.lineage_svg import lineage_svg

        if self.focused is None:
            return
        try:
            self.lineage.svg = lineage_svg(self.catalogue, self.focused, selected=self.focused)
            self.lineage_message.value = ""
        except Exception as error:  # a picture must never break the panel
            self.lineage_message.value = f"<i>no lineage drawing: {type(error).__name__}: {error}</i>"

    def draw_pareto(self) -> None:
        from slimkit.jupyter_ext.pareto_plot import pareto_svg

        if not self.y.value:
            self.pareto_message.value = "<i>no evaluations in the catalogue yet</i>"
            return
        try:
            self.pareto.svg = pareto_svg(self.catalogue, self.x.value, self.y.value, selected=self.focused)
            self.pareto_message.value = ""
        except Exception as error:
            self.pareto_message.value = f"<i>no Pareto plot: {type(error).__name__}: {error}</i>"
