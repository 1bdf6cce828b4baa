"""Whether a recipe can run streamed, decided before anything is loaded.

Every step's compressor says whether it can run on a model opened block by block with its config
(:meth:`~slimkit.BaseCompressor.stream_refusal`); a recipe with an evaluation that does not
stream (:attr:`~slimkit.BaseEvaluator.streams`) or an export, which need the whole model in
memory, is refused too, each problem on its own line, so that a long run never starts only to
fail at its end.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimkit.core.errors import ConfigError, RecipeError
from slimkit.core.identity import guarded

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.host import Host
    from slimkit.core.recipe import ValidatedRecipe


def stream_problems(host: "Host", validated: "ValidatedRecipe", model: Any, target: Path | None) -> list[str]:
    """What stops ``validated`` from running streamed on ``model`` into ``target``."""
    from slimkit.core.model_io import LoadedModel

    problems: list[str] = []
    if isinstance(model, LoadedModel):
        problems.append("stream: the model is already in memory; give its folder or hub id to stream it")
    if target is None:
        problems.append("stream: a streamed run writes the model as it goes; give it an output folder (--out) "
                        "or a catalogue to keep it in")
    for index, planned in enumerate(validated.planned(), start=1):
        ctx = planned.context(host)
        compressor = planned.info.create()
        refusal = guarded(planned.info, "stream_refusal",
                          lambda: compressor.stream_refusal(planned.config, ctx))  # noqa: B023
        if refusal:
            problems.append(f"step {index} ({planned.info.name}) cannot run streamed: {refusal}")
    for index, (spec, info, _) in enumerate(validated.evaluations, start=1):
        if not getattr(info.cls, "streams", False):
            problems.append(f"evaluate {index} ({spec.metric}) needs the model in memory; drop it from a streamed "
                            "run and evaluate the result afterwards")
    if validated.recipe.export:
        problems.append("export: a streamed run does not export yet; export the result afterwards with slimkit export")
    return problems


def check_streamable(host: "Host", validated: "ValidatedRecipe", model: Any, target: Path | None) -> None:
    """Raise :class:`RecipeError` listing every :func:`stream_problems`."""
    problems = stream_problems(host, validated, model, target)
    if problems:
        raise RecipeError(problems, validated.recipe.name)


def check_evaluator_streams(name: str, info: Any, model: Any) -> None:
    """Raise :class:`ConfigError` if ``model`` was opened block by block and the evaluator
    ``name`` (its registry entry ``info``) does not stream (:attr:`~slimkit.BaseEvaluator.streams`)."""
    if getattr(model, "stream", None) is not None and not getattr(info.cls, "streams", False):
        raise ConfigError(f"evaluator {name!r} needs the model in memory, and {model.source} was opened streamed "
                          f"(block by block); load it whole to run {name}")
