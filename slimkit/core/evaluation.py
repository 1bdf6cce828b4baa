"""Evaluating a model outside a recipe, recorded in the catalogue like everything else."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Mapping

from slimkit.core.memory import lean_heap
from slimkit.core.recording import describe_input, open_catalogue, record_input, recorded_run
from slimkit.core.config import MethodConfig
from slimkit.core.contracts import ProgressCallback
from slimkit.core.errors import PluginError
from slimkit.core.host import Host, get_host
from slimkit.core.identity import guarded, plugin_label
from slimkit.core.model_io import LoadedModel
from slimkit.core.provenance import content_id, now_iso
from slimkit.core.registry import MethodInfo
from slimkit.core.stream.guard import check_evaluator_streams

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.catalogue import Catalogue


def run_evaluation(
    host: Host, name: str, info: MethodInfo[Any], config: MethodConfig, model: LoadedModel,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Run one evaluator; the record slimkit.json and the catalogue keep (metrics, version,
    config, the fingerprints of the data it read, time)."""
    lean_heap()  # freed tensors back to the system, not kept as heap (see slimkit.core.memory)
    ctx = host.context(progress=progress)
    metrics = guarded(info, "evaluate", lambda: info.create().evaluate(model, config, ctx))
    if not isinstance(metrics, Mapping) or not all(isinstance(v, (int, float)) for v in metrics.values()):
        raise PluginError(f"{plugin_label(info)}: evaluate returned {type(metrics).__name__}, "
                          "not a mapping of metric names to numbers")
    metrics = {str(k): float(v) for k, v in metrics.items()}
    return {"evaluator": name, "version": info.version, "config": config.model_dump(mode="json"),
            "metrics": metrics, "dataset_fingerprint": ";".join(ctx.data_fingerprints) or None, "time": now_iso()}


def model_id(model: LoadedModel) -> str:
    """The content id of ``model``'s weights; for a model opened block by block, read from its
    shards one tensor at a time (the id it would have in memory)."""
    stream = model.stream
    if stream is None:
        return content_id(model.model)
    from slimkit.core.stream.blocks import streamed_content_id

    stream.check_open("identify the weights")
    return streamed_content_id(model.model, stream.source)


def evaluate_model(
    model: LoadedModel,
    evaluations: Mapping[str, Mapping[str, Any] | None],
    *,
    host: Host | None = None,
    catalogue: "Catalogue | str | None | Literal[False]" = None,
    progress: ProgressCallback | None = None,
) -> dict[str, dict[str, float]]:
    """Run evaluators (name -> params) on ``model``; all are validated and checked first.

    With a catalogue, the model (and the chain in its ``slimkit.json``, if it was derived) and
    every metric are recorded under one ``eval`` run.
    """
    host = host or get_host()
    plan = []
    for name, params in evaluations.items():
        info = host.evaluators.get(name)
        check_evaluator_streams(name, info, model)
        config = host.config(info, params)
        plan.append((name, info, config))
    for _, info, config in plan:
        guarded(info, "check", lambda: info.create().check(model, config, host.context()))  # noqa: B023
    cat = open_catalogue(catalogue)
    with recorded_run(cat, "eval") as run_id:
        records = [run_evaluation(host, name, info, config, model, progress) for name, info, config in plan]
        if cat is not None:
            record_input(cat, describe_input(model, model_id(model), records), run_id)
    return {record["evaluator"]: record["metrics"] for record in records}
