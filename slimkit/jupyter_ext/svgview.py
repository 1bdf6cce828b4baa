"""An SVG picture whose marked elements can be clicked to select a model.

Why a widget of its own: the lineage drawing and the Pareto plot are plain SVG strings made in
Python (one by hand, one by matplotlib), and the panel wants to know which model a person clicked.
Rather than a different widget per picture, both mark their clickable elements the same way: an
element whose ``id`` is ``slimkit-select-`` + the percent-encoded model id (see
:func:`slimkit.core.present.svg.element_id`). Clicking such an element, or anything inside it,
sets :attr:`SvgView.selected` to the decoded model id, and the widget frames that element.

Plain JavaScript (anywidget ESM, no build step); the SVG is inserted as markup, so its ``<script>``
elements never run (our pictures have none, and every text in them is escaped).
"""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import anywidget
import traitlets

from slimkit.core.present.svg import SELECT_PREFIX, decode_id

_ID = re.compile(r"""\bid\s*=\s*(["'])""" + re.escape(SELECT_PREFIX) + r"""(.*?)\1""")

_ESM = r"""
const PREFIX = "slimkit-select-";
const decode = (text) => { try { return decodeURIComponent(text); } catch (e) { return text; } };
const selectable = (root) => root.querySelectorAll('[id^="' + PREFIX + '"]');

function render({ model, el }) {
  el.classList.add("slimkit-svgview");
  const canvas = document.createElement("div");
  canvas.className = "slimkit-svgview-canvas";
  el.appendChild(canvas);

  const paint = () => {
    const chosen = model.get("selected");
    for (const node of selectable(canvas)) {
      node.classList.add("slimkit-clickable");
      node.classList.toggle("slimkit-selected", decode(node.id.slice(PREFIX.length)) === chosen);
    }
  };
  const draw = () => {
    canvas.innerHTML = model.get("svg") || "";
    paint();
  };
  const onClick = (event) => {
    const hit = event.target.closest && event.target.closest('[id^="' + PREFIX + '"]');
    if (!hit || !canvas.contains(hit)) return;
    model.set("selected", decode(hit.id.slice(PREFIX.length)));
    model.save_changes();
  };
  canvas.addEventListener("click", onClick);
  model.on("change:svg", draw);
  model.on("change:selected", paint);
  draw();
  return () => {
    canvas.removeEventListener("click", onClick);
    model.off("change:svg", draw);
    model.off("change:selected", paint);
  };
}

export default { render };
"""

_CSS = """
.slimkit-svgview-canvas { overflow: auto; max-width: 100%; }  /* wide lineages scroll: text stays legible */
.slimkit-svgview-canvas svg { display: block; }
.slimkit-svgview .slimkit-clickable { cursor: pointer; }
.slimkit-svgview .slimkit-clickable:hover { filter: drop-shadow(0 0 2px #1c7ed6); }
.slimkit-svgview .slimkit-selected { filter: drop-shadow(0 0 3px #e8590c) drop-shadow(0 0 2px #e8590c); }
.slimkit-svgview .slimkit-selected rect { stroke: #e8590c !important; stroke-width: 3px !important; }
"""


def clickable_ids(svg: str) -> list[str]:
    """The model ids an SVG marks as selectable, in document order, each once."""
    found: dict[str, None] = {}
    for match in _ID.finditer(svg or ""):
        found.setdefault(decode_id(unescape(match.group(2))), None)
    return list(found)


class SvgView(anywidget.AnyWidget):
    """Shows ``svg``; a click on a ``slimkit-select-*`` element sets ``selected`` (a model id,
    ``""`` for none). ``clickable_ids`` lists what can be selected in the current picture."""

    _esm = _ESM
    _css = _CSS
    svg = traitlets.Unicode("").tag(sync=True)
    selected = traitlets.Unicode("").tag(sync=True)
    clickable_ids = traitlets.List(traitlets.Unicode(), read_only=True).tag(sync=True)

    def __init__(self, svg: str = "", **kwargs: Any) -> None:
        super().__init__(svg=svg, **kwargs)
        self.set_trait("clickable_ids", clickable_ids(self.svg))

    @traitlets.observe("svg")
    def _svg_changed(self, change: dict[str, Any]) -> None:
        self.set_trait("clickable_ids", clickable_ids(change["new"]))

    def select(self, model_id: str | None) -> None:
        """Select ``model_id`` as a click would (``None`` or ``""`` clears the selection).

        Raises ``ValueError`` for an id the picture does not show, so a typo is not a silent no-op.
        """
        if not model_id:
            self.selected = ""
            return
        if model_id not in self.clickable_ids:
            raise ValueError(f"{model_id!r} is not selectable in this picture; it shows "
                             f"{', '.join(self.clickable_ids) or 'nothing selectable'}")
        self.selected = model_id
