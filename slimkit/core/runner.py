"""Running a recipe: validate everything, evaluate, apply each step, save, evaluate again.

Every step is timed and its peak memory measured; the chain of steps with their configs, plugins,
versions, calibration fingerprint and seed goes into the derived model's ``slimkit.json``.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimkit.core.contracts import CompressionSummary, ProgressCallback
from slimkit.core.config import serialise_config
from slimkit.core.host import Host, get_host
from slimkit.core.memory import peak_rss_bytes, reset_peak
from slimkit.core.model_io import (
    PROVENANCE_FILE,
    LoadedModel,
    check_output,
    load_model,
    save_model,
)
from slimkit.core.provenance import Stopwatch, StepRecord, build_provenance, content_id, now_iso, runtime_versions
from slimkit.core.errors import RecipeError
from slimkit.core.recipe import Recipe, ValidatedRecipe


@dataclass
class RunResult:
    """What a run produced: the derived model, where it was saved, its steps and metrics."""

    model: LoadedModel
    output: Path | None
    steps: list[StepRecord]
    summaries: list[CompressionSummary]
    before: dict[str, dict[str, float]] = field(default_factory=dict)
    after: dict[str, dict[str, float]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def compression_seconds(self) -> float:
        return sum(step.wall_time_s for step in self.steps)

    def comparison(self) -> list[tuple[str, float | None, float | None]]:
        """``(evaluator.metric, before, after)`` rows in evaluation order."""
        rows: list[tuple[str, float | None, float | None]] = []
        for evaluator, metrics in self.after.items():
            for metric, value in metrics.items():
                rows.append((f"{evaluator}.{metric}", self.before.get(evaluator, {}).get(metric), value))
        return rows


def _evaluate(host: Host, validated: ValidatedRecipe, model: LoadedModel, progress: ProgressCallback | None) -> dict[str, dict[str, float]]:
    results = {}
    for spec, info, config in validated.evaluations:
        ctx = host.context(progress=progress)
        results[spec.metric] = dict(info.create().evaluate(model, config, ctx))
    return results


def run_recipe(
    recipe: Recipe,
    model: LoadedModel | str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    host: Host | None = None,
    progress: ProgressCallback | None = None,
    inplace: bool = False,
) -> RunResult:
    """Apply ``recipe`` to ``model`` (a :class:`LoadedModel` or anything :func:`load_model` takes).

    :param out: save the derived model here (Hugging Face folder + ``slimkit.json``).
    :param overwrite: replace ``out`` if it exists (only once the new model is fully written).
    :param inplace: change the given :class:`LoadedModel` itself instead of a copy.
    :raises RecipeError: before any work, listing every problem with the recipe and the model.
    """
    host = host or get_host()
    target = check_output(out, overwrite) if out is not None else None
    validated = recipe.resolve(host)
    if isinstance(model, LoadedModel):
        loaded = model if inplace else copy.deepcopy(model)
    else:
        loaded = load_model(model)
    calibration = recipe.calibration_data(loaded)
    problems = validated.check_model(host, loaded, calibration)
    if problems:
        raise RecipeError(problems, recipe.name)
    adapter = host.adapter_for(loaded)

    before = _evaluate(host, validated, loaded, progress)
    parent_id = content_id(loaded.model)
    base = {"source": loaded.source, "content_id": parent_id, "architecture": loaded.architecture}
    records: list[StepRecord] = []
    summaries: list[CompressionSummary] = []
    for step, info, config in validated.steps:
        seed = step.seed if step.seed is not None else recipe.seed
        ctx = host.context(calibration=calibration, seed=seed, progress=progress)
        reset_peak()
        with Stopwatch() as watch:
            summary = info.create().compress_(loaded, adapter, config, ctx)
        loaded.path = None  # the in-memory model no longer matches any file
        child_id = content_id(loaded.model)
        records.append(
            StepRecord(
                method=info.name,
                family=info.family,
                config=serialise_config(info.name, info.version, config),
                plugin=info.plugin,
                plugin_version=info.plugin_version,
                versions=runtime_versions(),
                parent_id=parent_id,
                child_id=child_id,
                # Recorded whenever the step was given calibration data: a compressor may not need it
                # itself but rank with a scorer that does (prune.unstructured with a data-aware scorer).
                calibration_fingerprint=calibration.fingerprint if calibration is not None else None,
                seed=seed,
                wall_time_s=round(watch.seconds, 4),
                peak_rss_bytes=peak_rss_bytes(),
                summary=summary.description,
                details=dict(summary.details),
            )
        )
        summaries.append(summary)
        parent_id = child_id

    provenance = build_provenance(
        model=loaded.model,
        child_id=parent_id,
        base=base,
        steps=records,
        parent=loaded.provenance,
        recipe=recipe.model_dump(mode="json", exclude={"base_dir"}),
    )
    if target is not None:
        save_model(loaded, target, provenance, overwrite=overwrite)
        loaded.path = target
    loaded.provenance = provenance
    after = _evaluate(host, validated, loaded, progress)
    if after:
        provenance["evaluations"] = [
            {"evaluator": name, "metrics": metrics, "time": now_iso()} for name, metrics in after.items()
        ]
        if target is not None:
            _rewrite_json(target / PROVENANCE_FILE, provenance)
    return RunResult(loaded, target, records, summaries, before, after, provenance)


def _rewrite_json(path: Path, document: dict[str, Any]) -> None:
    """Replace a JSON file atomically (write beside it, then rename over it)."""
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    os.replace(staging, path)
