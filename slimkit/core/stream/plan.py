"""Whether a recipe can run streamed, and whether it must, decided before anything is loaded.

Every step's compressor says whether it can run on a model opened block by block with its config
(:meth:`~slimkit.BaseCompressor.stream_refusal`); a recipe with an evaluation that does not
stream (:attr:`~slimkit.BaseEvaluator.streams`) or an export, which need the whole model in
memory, is refused too, each problem on its own line, so that a long run never starts only to
fail at its end. :func:`memory_plan` weighs the run's expected peak memory against the budget and
decides between memory and streaming (see :mod:`slimkit.core.stream.cost`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimkit.core.errors import RecipeError
from slimkit.core.identity import guarded
from slimkit.core.stream import cost as costs
from slimkit.core.stream.cost import CostEstimate, available_bytes, estimate, gib, parse_bytes

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


@dataclass
class MemoryPlan:
    """How a run will hold its model: ``stream`` or not, under ``budget``, and the line that says
    so (``note``); ``cost`` is ``None`` where nothing could be estimated (a GGUF file, a hub id)."""

    stream: bool
    budget: int
    cost: CostEstimate | None = None
    note: str = ""


def _needs_hessian(host: "Host", validated: "ValidatedRecipe") -> bool:
    for planned in validated.planned():
        if planned.info.cls.needs_calibration:
            return True
        for use in planned.uses:
            if use.family == "scorer" and "hessian" in getattr(host.scorers.get(use.name).cls, "statistics", ()):
                return True
    return False


def _suggestions(runtime: Any, cost: CostEstimate) -> str:
    ideas = ["a larger --max-memory"]
    if cost.parts.get("calibration states", 0) > cost.block_bytes:
        ideas.insert(0, "fewer calibration samples (n_samples) or shorter ones (seq_len)")
    if runtime.dtype == "float32":
        ideas.insert(0, "--dtype bfloat16 (half the weights' memory)")
    return ", or ".join(ideas)


def memory_plan(host: "Host", validated: "ValidatedRecipe", model: Any, target: Path | None, runtime: Any) -> MemoryPlan:
    """Decide, before anything is loaded, whether the run holds ``model`` in memory or streams it,
    from :func:`~slimkit.core.stream.cost.estimate` against the budget. Raises :class:`RecipeError`
    when neither fits (or the model must stay in memory and does not fit), saying what would."""
    from slimkit.core.errors import SlimkitError
    from slimkit.core.model_io import LoadedModel, spec_path

    budget = parse_bytes(runtime.max_memory) if runtime.max_memory else available_bytes()
    where = f"the budget {gib(budget)}" + ("" if runtime.max_memory else " (the memory available now)")
    if isinstance(model, LoadedModel):
        return MemoryPlan(False, budget)
    folder = spec_path(model)
    local = folder if folder is not None and folder.is_dir() else None  # None: a file, a hub id, nothing
    files = list(local.glob("*.safetensors")) if local is not None else []
    if not runtime.stream and files and 3 * sum(f.stat().st_size for f in files) + 2**30 + costs.resident_bytes() < budget:
        return MemoryPlan(False, budget)  # far within the budget (what the process holds counted): no closer look
    try:
        from slimkit.core.stream.opening import open_streamed

        if not runtime.stream and local is None:
            return MemoryPlan(False, budget)  # a GGUF file or a hub id: nothing to estimate from
        skeleton = open_streamed(model, host, dtype=runtime.dtype, fill=False)
    except SlimkitError:
        if runtime.stream:
            raise
        return MemoryPlan(False, budget)  # the loader will say what is wrong with it
    stream = skeleton.stream
    cost = estimate(stream.source, skeleton.config, stream.block_names, stream.dtype, validated.recipe.calibration,
                    _needs_hessian(host, validated))
    name = validated.recipe.name
    if runtime.stream:
        if cost.streamed > budget:
            raise RecipeError([f"a streamed run needs {cost.describe(True)}, more than {where}: try "
                               f"{_suggestions(runtime, cost)}"], name)
        return MemoryPlan(True, budget, cost, f"streamed block by block: expected peak {cost.describe(True)}, "
                                              f"within {where}")
    if cost.in_memory <= budget:  # said only when it is close: a run well within the budget is not news
        note = f"in memory: expected peak {cost.describe(False)}, within {where}" if 2 * cost.in_memory > budget else ""
        return MemoryPlan(False, budget, cost, note)
    problems = stream_problems(host, validated, model, target)
    if cost.streamed > budget or problems:
        why = "; ".join(problems) if problems else f"streamed it would need {cost.describe(True)} too"
        raise RecipeError([f"the run needs {cost.describe(False)} in memory, more than {where}, and cannot "
                           f"stream instead ({why}); try {_suggestions(runtime, cost)}"], name)
    return MemoryPlan(True, budget, cost, f"the model needs {gib(cost.in_memory)} in memory, more than {where}: "
                                          f"streaming it block by block instead (expected peak {gib(cost.streamed)})")
