"""The one check an evaluation makes of a streamed model, kept apart from the planning in
:mod:`slimkit.core.stream.plan` (which opens models) so that the host can make it without
importing what opens models (that would close an import cycle through the host)."""

from __future__ import annotations

from typing import Any

from slimkit.core.errors import ConfigError


def check_evaluator_streams(name: str, info: Any, model: Any) -> None:
    """Raise :class:`ConfigError` if ``model`` was opened block by block and the evaluator
    ``name`` (its registry entry ``info``) does not stream (:attr:`~slimkit.BaseEvaluator.streams`)."""
    if getattr(model, "stream", None) is not None and not getattr(info.cls, "streams", False):
        raise ConfigError(f"evaluator {name!r} needs the model in memory, and {model.source} was opened streamed "
                          f"(block by block); load it whole to run {name}")
