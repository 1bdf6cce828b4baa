"""slimkit: make large language models smaller and faster, and remember how every one was made.

Plugin authors need only ``from slimkit import hookimpl``; everything else here is the Python API.
Names are imported lazily, so ``import slimkit`` stays cheap until something is used.
"""

from __future__ import annotations

import importlib
from typing import Any

from slimkit.core.hookspecs import hookimpl

_LAZY: dict[str, str] = {
    # plugin host
    "make_host": "slimkit.core.host",
    "get_host": "slimkit.core.host",
    "Host": "slimkit.core.host",
    "DEFAULT_PLUGINS": "slimkit.core.host",
    # method contracts
    "MethodConfig": "slimkit.core.config",
    "BaseScorer": "slimkit.core.contracts",
    "BaseCompressor": "slimkit.core.contracts",
    "BaseEvaluator": "slimkit.core.contracts",
    "CompressionSummary": "slimkit.core.contracts",
    "MethodContext": "slimkit.core.contracts",
    "MethodUse": "slimkit.core.contracts",
    "ProgressEvent": "slimkit.core.contracts",
    "Scores": "slimkit.core.scores",
    "ArchitectureAdapter": "slimkit.core.architecture",
    "ModelLayout": "slimkit.core.architecture",
    "BlockLayout": "slimkit.core.architecture",
    "AttentionLayout": "slimkit.core.architecture",
    "MLPLayout": "slimkit.core.architecture",
    "LinearRef": "slimkit.core.architecture",
    # models and data
    "LoadedModel": "slimkit.core.model_io",
    "load_model": "slimkit.core.model_io",
    "save_model": "slimkit.core.model_io",
    "TextSource": "slimkit.core.data",
    "CalibrationData": "slimkit.core.data",
    "calibration_samples": "slimkit.core.data",
    # recipes
    "Recipe": "slimkit.core.recipe",
    "load_recipe": "slimkit.core.recipe",
    "run_recipe": "slimkit.core.runner",
    "RunResult": "slimkit.core.runner",
    # errors
    "SlimkitError": "slimkit.core.errors",
}

__all__ = ["hookimpl", *_LAZY]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext slimkit`` in IPython/Jupyter: adds the ``%slimkit`` panel magic."""
    from slimkit.jupyter_ext import load_ipython_extension as load

    load(ipython)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'slimkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
