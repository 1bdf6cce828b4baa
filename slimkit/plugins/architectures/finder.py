"""The default ``find_architecture``: the first registered adapter whose ``matches`` is true.

It runs last (``trylast``), so a plugin that implements the hook can override the choice.
"""

from __future__ import annotations

from slimkit import hookimpl


@hookimpl(trylast=True)
def find_architecture(model, adapters):
    for adapter in adapters.values():
        if adapter.matches(model):
            return adapter
    return None
