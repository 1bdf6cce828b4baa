"""slimkit: make large language models smaller and faster, and remember how every one was made.

This namespace is the whole public API, for users and for plugin authors alike: a plugin (scorer,
compressor, evaluator, architecture adapter) imports only from ``slimkit``; ``slimkit.core.*``
modules are internals that may change. docs/plugin_api.md lists every name below with its
signature. Names are imported lazily, so ``import slimkit`` stays cheap (no torch) until one is used.
"""

from __future__ import annotations

import importlib
from typing import Any

from slimkit.core.hookspecs import hookimpl as hookimpl  # "as": an explicit re-export

# Public name -> "module" (the name is the same there) or "module:name" (it is called otherwise
# there: a short core name that would be vague at the top level). Grouped by topic; the topics
# are the sections of docs/plugin_api.md (docs/gen_plugin_api.py writes its reference from them).
_TOPICS: dict[str, dict[str, str]] = {
    "Plugin host": {
        "hookimpl": "slimkit.core.hookspecs",
        "make_host": "slimkit.core.host",
        "get_host": "slimkit.core.host",
        "Host": "slimkit.core.host",
        "DEFAULT_PLUGINS": "slimkit.core.host",
        "MethodInfo": "slimkit.core.registry",
    },
    "Method contracts": {
        "MethodConfig": "slimkit.core.config",
        "BaseScorer": "slimkit.core.contracts",
        "BaseCompressor": "slimkit.core.contracts",
        "BaseEvaluator": "slimkit.core.contracts",
        "MethodContext": "slimkit.core.contracts",
        "MethodUse": "slimkit.core.contracts",
        "ProgressEvent": "slimkit.core.contracts",
        "CompressionSummary": "slimkit.core.contracts",
        "Scores": "slimkit.core.scores",
        "GRANULARITIES": "slimkit.core.contracts",
    },
    "Errors": {
        "SlimkitError": "slimkit.core.errors",
        "ArchitectureError": "slimkit.core.errors",
        "ConfigError": "slimkit.core.errors",
        "DataError": "slimkit.core.errors",
        "ModelLoadError": "slimkit.core.errors",
        "OutputExistsError": "slimkit.core.errors",
        "PluginError": "slimkit.core.errors",
        "RecipeError": "slimkit.core.errors",
        "RunCancelled": "slimkit.core.errors",
        "UnknownMethodError": "slimkit.core.errors",
        "PluginWarning": "slimkit.core.errors",
    },
    "Roles": {
        "Role": "slimkit.core.roles",
        "ALL_ROLES": "slimkit.core.roles",
        "ATTENTION_ROLES": "slimkit.core.roles",
        "MLP_ROLES": "slimkit.core.roles",
    },
    "Architectures and module replacement": {
        "ArchitectureAdapter": "slimkit.core.architecture",
        "ModuleMapAdapter": "slimkit.core.module_map",
        "ModelLayout": "slimkit.core.architecture",
        "BlockLayout": "slimkit.core.architecture",
        "AttentionLayout": "slimkit.core.architecture",
        "MLPLayout": "slimkit.core.architecture",
        "LinearRef": "slimkit.core.architecture",
        "resolve_module": "slimkit.core.architecture:resolve",
        "set_module": "slimkit.core.architecture",
    },
    "Calibration engine": {
        "SequentialCalibration": "slimkit.core.calibration",
        "BlockStep": "slimkit.core.calibration",
        "LinearStatistics": "slimkit.core.calibration",
        "SharedInput": "slimkit.core.calibration",
        "CALIBRATION_STATISTICS": "slimkit.core.calibration:STATISTICS",
        "by_shared_input": "slimkit.core.calibration",
        "require_hessian_data": "slimkit.core.calibration",
        "inverse_cholesky_upper": "slimkit.core.linalg",
    },
    "Models and data": {
        "LoadedModel": "slimkit.core.model_io",
        "load_model": "slimkit.core.model_io",
        "save_model": "slimkit.core.model_io",
        "is_causal_lm": "slimkit.core.model_io",
        "disk_bytes": "slimkit.core.model_io",
        "example_text": "slimkit.core.model_io",
        "TextSource": "slimkit.core.data",
        "CalibrationData": "slimkit.core.data",
        "calibration_samples": "slimkit.core.data",
        "tokenize": "slimkit.core.data",
        "sha256_bytes": "slimkit.core.data",
    },
    "Quantization": {
        "QuantGrid": "slimkit.core.quant.formats",
        "QUANT_BITS": "slimkit.core.quant.formats:BITS",
        "grid_params": "slimkit.core.quant.formats",
        "quantize_weight": "slimkit.core.quant.formats:quantize",
        "dequantize_weight": "slimkit.core.quant.formats:dequantize",
        "fp16_exact": "slimkit.core.quant.modules",
        "QuantizedLinear": "slimkit.core.quant.modules",
        "QuantizedEmbedding": "slimkit.core.quant.modules",
        "fake_quantize_linears": "slimkit.core.quant.fake",
        "requantize_linears": "slimkit.core.quant.fake",
    },
    "Low rank": {
        "LowRankLinear": "slimkit.core.lowrank",
        "Factorisation": "slimkit.core.lowrank",
        "factorise": "slimkit.core.lowrank",
        "low_rank_saves": "slimkit.core.lowrank:saves",
    },
    "Replaced modules and densification": {
        "replaced_modules": "slimkit.core.storage",
        "quantized_modules": "slimkit.core.storage",
        "to_dense": "slimkit.core.storage",
    },
    "Recipes": {
        "Recipe": "slimkit.core.recipe",
        "load_recipe": "slimkit.core.recipe",
        "run_recipe": "slimkit.core.runner",
        "RunResult": "slimkit.core.runner",
    },
}

_LAZY: dict[str, str] = {name: where for names in _TOPICS.values() for name, where in names.items()}

__all__ = list(_LAZY)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext slimkit`` in IPython/Jupyter: adds the ``%slimkit`` panel magic."""
    from slimkit.jupyter_ext import load_ipython_extension as load

    load(ipython)


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'slimkit' has no attribute {name!r}")
    module, _, attribute = where.partition(":")
    value = getattr(importlib.import_module(module), attribute or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
