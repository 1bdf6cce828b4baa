"""slimkit: make large language models smaller and faster, and remember how every one was made.

This namespace is the whole public API, for users and for plugin authors alike: a plugin (scorer,
compressor, evaluator, exporter, architecture adapter) imports only from ``slimkit``; ``slimkit.core.*``
modules are internals that may change. docs/plugin_api.md lists every name below with its
signature. Names are imported lazily, so ``import slimkit`` stays cheap (no torch) until one is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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
        "DeviceError": "slimkit.core.errors",
        "DistributedError": "slimkit.core.errors",
        "ArtifactStoreError": "slimkit.core.artifact_store.manifest",
        "ChecksumError": "slimkit.core.artifact_store.manifest",
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
        "LinearStatistics": "slimkit.core.statistics",
        "SharedInput": "slimkit.core.statistics",
        "CALIBRATION_STATISTICS": "slimkit.core.statistics:STATISTICS",
        "by_shared_input": "slimkit.core.statistics",
        "require_hessian_data": "slimkit.core.statistics",
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
    "Streamed models": {
        "open_streamed": "slimkit.core.stream.opening",
        "streamed_hidden_states": "slimkit.core.stream.forward",
        "BlockStream": "slimkit.core.stream.blocks",
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
    "Exporters": {
        "BaseExporter": "slimkit.core.export.contract",
        "ExportContext": "slimkit.core.export.contract",
        "ExportSummary": "slimkit.core.export.contract",
        "EXPORT_CONTENT_ID_KEY": "slimkit.core.export.contract:CONTENT_ID_KEY",
        "ExportError": "slimkit.core.errors",
        "export_model": "slimkit.core.export.run",
        "ExportResult": "slimkit.core.export.run",
        "identify_export": "slimkit.core.export.lookup",
    },
    "Recipes": {
        "Recipe": "slimkit.core.recipe",
        "load_recipe": "slimkit.core.recipe",
        "run_recipe": "slimkit.core.runner",
        "RunResult": "slimkit.core.run_result",
    },
    "Sweeps and searches": {
        "SearchSpec": "slimkit.core.search.spec",
        "load_search": "slimkit.core.search.spec",
        "Budget": "slimkit.core.search.spec",
        "SearchError": "slimkit.core.search.spec",
        "run_sweep": "slimkit.core.search.driver",
        "run_search": "slimkit.core.search.driver",
        "SearchResult": "slimkit.core.search.driver",
        "SearchEvent": "slimkit.core.search.trials",
        "Trial": "slimkit.core.search.trials",
    },
}

if TYPE_CHECKING:  # what type checkers and IDEs see; tests/test_public_toolkit.py keeps it equal to _TOPICS
    from slimkit.core.architecture import (
        ArchitectureAdapter as ArchitectureAdapter,
        AttentionLayout as AttentionLayout,
        BlockLayout as BlockLayout,
        LinearRef as LinearRef,
        MLPLayout as MLPLayout,
        ModelLayout as ModelLayout,
        resolve as resolve_module,  # noqa: F401 (in __all__, built from _TOPICS)
        set_module as set_module,
    )
    from slimkit.core.calibration import (
        BlockStep as BlockStep,
        SequentialCalibration as SequentialCalibration,
    )
    from slimkit.core.statistics import (
        STATISTICS as CALIBRATION_STATISTICS,  # noqa: F401 (in __all__, built from _TOPICS)
        LinearStatistics as LinearStatistics,
        SharedInput as SharedInput,
        by_shared_input as by_shared_input,
        require_hessian_data as require_hessian_data,
    )
    from slimkit.core.config import MethodConfig as MethodConfig
    from slimkit.core.contracts import (
        BaseCompressor as BaseCompressor,
        BaseEvaluator as BaseEvaluator,
        BaseScorer as BaseScorer,
        CompressionSummary as CompressionSummary,
        GRANULARITIES as GRANULARITIES,
        MethodContext as MethodContext,
        MethodUse as MethodUse,
        ProgressEvent as ProgressEvent,
    )
    from slimkit.core.data import (
        CalibrationData as CalibrationData,
        TextSource as TextSource,
        calibration_samples as calibration_samples,
        sha256_bytes as sha256_bytes,
        tokenize as tokenize,
    )
    from slimkit.core.errors import (
        ArchitectureError as ArchitectureError,
        ConfigError as ConfigError,
        DataError as DataError,
        DeviceError as DeviceError,
        DistributedError as DistributedError,
        ExportError as ExportError,
        ModelLoadError as ModelLoadError,
        OutputExistsError as OutputExistsError,
        PluginError as PluginError,
        PluginWarning as PluginWarning,
        RecipeError as RecipeError,
        RunCancelled as RunCancelled,
        SlimkitError as SlimkitError,
        UnknownMethodError as UnknownMethodError,
    )
    from slimkit.core.artifact_store.manifest import (
        ArtifactStoreError as ArtifactStoreError,
        ChecksumError as ChecksumError,
    )
    from slimkit.core.export.contract import (
        CONTENT_ID_KEY as EXPORT_CONTENT_ID_KEY,  # noqa: F401 (in __all__, built from _TOPICS)
        BaseExporter as BaseExporter,
        ExportContext as ExportContext,
        ExportSummary as ExportSummary,
    )
    from slimkit.core.export.lookup import identify_export as identify_export
    from slimkit.core.export.run import ExportResult as ExportResult, export_model as export_model
    from slimkit.core.host import (
        DEFAULT_PLUGINS as DEFAULT_PLUGINS,
        Host as Host,
        get_host as get_host,
        make_host as make_host,
    )
    from slimkit.core.linalg import inverse_cholesky_upper as inverse_cholesky_upper
    from slimkit.core.lowrank import (
        Factorisation as Factorisation,
        LowRankLinear as LowRankLinear,
        factorise as factorise,
        saves as low_rank_saves,  # noqa: F401 (in __all__, built from _TOPICS)
    )
    from slimkit.core.model_io import (
        LoadedModel as LoadedModel,
        disk_bytes as disk_bytes,
        example_text as example_text,
        is_causal_lm as is_causal_lm,
        load_model as load_model,
        save_model as save_model,
    )
    from slimkit.core.module_map import ModuleMapAdapter as ModuleMapAdapter
    from slimkit.core.quant.fake import (
        fake_quantize_linears as fake_quantize_linears,
        requantize_linears as requantize_linears,
    )
    from slimkit.core.quant.formats import (
        BITS as QUANT_BITS,  # noqa: F401 (in __all__, built from _TOPICS)
        QuantGrid as QuantGrid,
        dequantize as dequantize_weight,  # noqa: F401 (in __all__, built from _TOPICS)
        grid_params as grid_params,
        quantize as quantize_weight,  # noqa: F401 (in __all__, built from _TOPICS)
    )
    from slimkit.core.quant.modules import (
        QuantizedEmbedding as QuantizedEmbedding,
        QuantizedLinear as QuantizedLinear,
        fp16_exact as fp16_exact,
    )
    from slimkit.core.recipe import Recipe as Recipe, load_recipe as load_recipe
    from slimkit.core.registry import MethodInfo as MethodInfo
    from slimkit.core.roles import (
        ALL_ROLES as ALL_ROLES,
        ATTENTION_ROLES as ATTENTION_ROLES,
        MLP_ROLES as MLP_ROLES,
        Role as Role,
    )
    from slimkit.core.run_result import RunResult as RunResult
    from slimkit.core.runner import run_recipe as run_recipe
    from slimkit.core.scores import Scores as Scores
    from slimkit.core.search.driver import (
        SearchResult as SearchResult,
        run_search as run_search,
        run_sweep as run_sweep,
    )
    from slimkit.core.search.spec import (
        Budget as Budget,
        SearchError as SearchError,
        SearchSpec as SearchSpec,
        load_search as load_search,
    )
    from slimkit.core.search.trials import SearchEvent as SearchEvent, Trial as Trial
    from slimkit.core.storage import (
        quantized_modules as quantized_modules,
        replaced_modules as replaced_modules,
        to_dense as to_dense,
    )
    from slimkit.core.stream.blocks import BlockStream as BlockStream
    from slimkit.core.stream.forward import streamed_hidden_states as streamed_hidden_states
    from slimkit.core.stream.opening import open_streamed as open_streamed

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
