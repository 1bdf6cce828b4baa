"""The lineage drawing for the panel: a catalogue and a model reference in, an SVG string out.

Why a thin wrapper: the drawing itself is pure Python in :mod:`slimkit.core.present.svg` (core
stays free of notebook dependencies, and ``Lineage`` objects display the same picture); the panel
only needs one call that reads the catalogue and accepts names or id prefixes for ``selected``.
"""

from __future__ import annotations

from slimkit.core.catalogue.migrate import CatalogueError
from slimkit.core.catalogue.store import Catalogue
from slimkit.core.present.lineage import Lineage
from slimkit.core.present.svg import SELECT_PREFIX, decode_id, element_id, encode_id

__all__ = ["lineage_svg", "SELECT_PREFIX", "decode_id", "element_id", "encode_id"]


def lineage_svg(cat: Catalogue, model_ref: str, *, selected: str | None = None, derived: bool = True) -> str:
    """An SVG of ``model_ref``'s lineage: its ancestors back to the base, extra parents such as
    teachers (dashed edges) and, with ``derived``, the models made directly from it.

    Every model box has the id ``slimkit-select-<percent-encoded model id>`` (for
    :class:`~slimkit.jupyter_ext.svgview.SvgView`). ``selected`` (id, id prefix or name; default
    the model itself) is framed in orange; a reference the catalogue does not know is ignored.
    """
    view = Lineage.of(cat, model_ref, derived=derived)
    chosen = view.focus
    if selected:
        try:
            chosen = cat.resolve(selected).id
        except CatalogueError:
            chosen = selected
    return view.svg(selected=chosen)
