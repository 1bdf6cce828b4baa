"""The hooks slimkit calls: this module is the reference for plugin authors.

A plugin is any module or object with functions decorated by :data:`hookimpl` whose names match
the specifications below. Install it as a package with an entry point in the group ``slimkit``::

    [project.entry-points.slimkit]
    my_plugin = "my_package.plugin"

The five method families are collected with a ``register`` callback: call it once per method
class. slimkit validates the class, refuses a name another plugin already registered (naming both
plugins) and records which plugin and distribution version supplied it, so the lineage of every
derived model says exactly what code made it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping

import pluggy

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    import click
    import torch

    from slimkit.core.architecture import ArchitectureAdapter

PROJECT_NAME = "slimkit"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
#: Decorate plugin functions with this; ``from slimkit import hookimpl`` is all a plugin needs.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

Register = Callable[[type], None]


@hookspec
def register_scorers(register: Register) -> None:
    """Register scorer classes: they compute importance of weights, neurons, heads or blocks.

    :param register: call ``register(ScorerClass)`` for each scorer. The class needs ``name``,
        ``version``, ``granularity``, a frozen pydantic ``Config`` and a ``score`` method; see
        :class:`slimkit.core.contracts.Scorer`.
    """


@hookspec
def register_compressors(register: Register) -> None:
    """Register compressor classes: they change a model (prune, quantize, factorise, distil).

    :param register: call ``register(CompressorClass)`` for each compressor; see
        :class:`slimkit.core.contracts.Compressor`.
    """


@hookspec
def register_architectures(register: Register) -> None:
    """Register architecture adapters: they tell methods where a model family keeps its blocks,
    attention projections and heads, MLP neurons, norms, embeddings and LM head.

    :param register: call ``register(AdapterClass)`` for each adapter; see
        :class:`slimkit.core.architecture.ArchitectureAdapter`.
    """


@hookspec
def register_evaluators(register: Register) -> None:
    """Register evaluator classes: they measure a model and return named metrics.

    :param register: call ``register(EvaluatorClass)`` for each evaluator; see
        :class:`slimkit.core.contracts.Evaluator`.
    """


@hookspec
def register_exporters(register: Register) -> None:
    """Register exporter classes: they write a model in a format a serving runtime loads
    (GGUF for llama.cpp, compressed-tensors for vLLM and transformers, ONNX, MLX...).

    :param register: call ``register(ExporterClass)`` for each exporter; see
        :class:`slimkit.core.export.contract.BaseExporter`.
    """


@hookspec
def register_commands(cli: "click.Group") -> None:
    """Add commands to the ``slimkit`` command line.

    :param cli: the root :class:`click.Group`; call ``cli.command()`` or ``cli.add_command()``.
    """


@hookspec(firstresult=True)
def find_architecture(
    model: "torch.nn.Module", adapters: Mapping[str, "ArchitectureAdapter"]
) -> "ArchitectureAdapter | None":
    """Pick the architecture adapter for ``model``; the first non-``None`` answer wins.

    slimkit's own implementation runs last and returns the first registered adapter whose
    ``matches(model)`` is true, so a plugin only implements this hook to override that choice
    (for instance to prefer its own adapter for a model another adapter also claims).

    :param model: the loaded model.
    :param adapters: installed adapter instances by name.
    :return: an adapter, or ``None`` to let the next implementation decide.
    """


ALL_HOOKS: tuple[str, ...] = (
    "register_scorers",
    "register_compressors",
    "register_architectures",
    "register_evaluators",
    "register_exporters",
    "register_commands",
    "find_architecture",
)

__all__ = ["hookimpl", "hookspec", "PROJECT_NAME", "Register", "ALL_HOOKS"]


