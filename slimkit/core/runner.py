"""Running a recipe: validate everything, evaluate, apply each step, save, evaluate again, record.

Every step is timed and its peak memory measured; the chain of steps with their configs, plugins,
versions, calibration data and seed goes into the derived model's ``slimkit.json`` and into the
catalogue. A step the catalogue already knows (same parent, method, config, data and seed) whose
result is still on disk is reused instead of recomputed, unless ``force`` is set.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from slimkit.core.config import serialise_config
from slimkit.core.contracts import CompressionSummary, ProgressCallback
from slimkit.core.data import CalibrationData
from slimkit.core.errors import RecipeError
from slimkit.core.host import Host, get_host
from slimkit.core.memory import peak_rss_bytes, reset_peak
from slimkit.core.model_io import PROVENANCE_FILE, LoadedModel, check_output, disk_bytes, load_model, save_model
from slimkit.core.provenance import (
    Stopwatch,
    StepRecord,
    build_provenance,
    content_id,
    runtime_versions,
    step_key,
)
from slimkit.core.recording import describe_input, open_catalogue, record_input, recorded_run
from slimkit.core.evaluation import run_evaluation
from slimkit.core.recipe import Recipe, ValidatedRecipe
from slimkit.core.teachers import Teachers, teacher_spec

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.catalogue import Catalogue



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
    reused: list[bool] = field(default_factory=list)
    run_id: str | None = None

    @property
    def compression_seconds(self) -> float:
        return sum(step.wall_time_s for step, reused in zip(self.steps, self.reused) if not reused)

    def comparison(self) -> list[tuple[str, float | None, float | None]]:
        """``(evaluator.metric, before, after)`` rows in evaluation order."""
        rows: list[tuple[str, float | None, float | None]] = []
        for evaluator, metrics in self.after.items():
            for metric, value in metrics.items():
                rows.append((f"{evaluator}.{metric}", self.before.get(evaluator, {}).get(metric), value))
        return rows

    def _repr_html_(self) -> str:  # notebooks: steps and metrics before/after
        from slimkit.core.present.html import run_result_html

        return run_result_html(self)


def evaluate_all(
    host: Host, validated: ValidatedRecipe, model: LoadedModel, progress: ProgressCallback | None
) -> list[dict[str, Any]]:
    """Run the recipe's evaluators; one record per evaluator (metrics, config, data, time)."""
    return [run_evaluation(host, spec.metric, info, config, model, progress)
            for spec, info, config in validated.evaluations]


def _calibration_spec(recipe: Recipe) -> dict[str, Any] | None:
    if recipe.calibration is None:
        return None
    spec = recipe.calibration.model_dump(mode="json")
    if spec.get("text"):
        spec["text"] = str(recipe.resolve_path(spec["text"]).resolve())
    return spec


def run_recipe(
    recipe: Recipe,
    model: LoadedModel | str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    host: Host | None = None,
    progress: ProgressCallback | None = None,
    inplace: bool = False,
    catalogue: "Catalogue | str | None | Literal[False]" = None,
    force: bool = False,
    name: str | None = None,
) -> RunResult:
    """Apply ``recipe`` to ``model`` (a :class:`LoadedModel` or anything :func:`load_model` takes).

    :param out: save the derived model here (Hugging Face folder + ``slimkit.json``).
    :param overwrite: replace ``out`` if it exists (only once the new model is fully written).
    :param inplace: change the given :class:`LoadedModel` itself instead of a copy.
    :param catalogue: record the run there (``None``: the default catalogue; ``False``: nowhere).
    :param force: recompute steps the catalogue already has results for.
    :param name: a unique name for the derived model in the catalogue.
    :raises RecipeError: before any work, listing every problem with the recipe and the model.
    """
    host = host or get_host()
    target = check_output(out, overwrite) if out is not None else None
    validated = recipe.resolve(host)
    cat = open_catalogue(catalogue)
    if isinstance(model, LoadedModel):
        loaded = model if inplace else copy.deepcopy(model)
    else:
        loaded = load_model(model)
    calibration = recipe.calibration_data(loaded)
    problems = validated.check_model(host, loaded, calibration)
    if problems:
        raise RecipeError(problems, recipe.name)
    with recorded_run(cat, "recipe", recipe.name, recipe.to_yaml()) as run_id:
        return _execute(host, recipe, validated, loaded, calibration, cat, run_id, target, overwrite,
                        progress, force, name)


def _execute(
    host: Host,
    recipe: Recipe,
    validated: ValidatedRecipe,
    loaded: LoadedModel,
    calibration: CalibrationData | None,
    cat: "Catalogue | None",
    run_id: str | None,
    target: Path | None,
    overwrite: bool,
    progress: ProgressCallback | None,
    force: bool,
    name: str | None,
) -> RunResult:
    parent_id = content_id(loaded.model)
    # Teachers first: a teacher that cannot be loaded fails the run before any evaluation or step.
    teachers = Teachers([(info, config) for _, info, config in validated.steps], loaded, parent_id)
    before_records = evaluate_all(host, validated, loaded, progress)
    base = {"source": loaded.source, "content_id": parent_id, "architecture": loaded.architecture}
    origin = loaded.provenance  # the chain that led to the input model, if it was derived
    # The inputs are described now (the model changes in place below) and recorded with the
    # result: a run that fails or is cancelled leaves the catalogue's models as they were.
    inputs = [describe_input(loaded, parent_id, before_records)] if cat is not None else []

    fingerprint = calibration.fingerprint if calibration is not None else None
    calibration_spec = _calibration_spec(recipe)
    planned = []
    for step, info, config in validated.steps:
        seed = step.seed if step.seed is not None else recipe.seed
        planned.append((info, config, serialise_config(info.name, info.version, config), seed))

    start, reused_model = (0, None) if cat is None or force else _reusable_prefix(cat, planned, parent_id, fingerprint)
    records: list[StepRecord] = []
    summaries: list[CompressionSummary] = []
    reused: list[bool] = []
    for index, (info, config, serial, seed) in enumerate(planned):
        parents = [{"model_id": parent_id, "role": "input"}]
        spec = teacher_spec(info, config)
        teacher = teachers.get(spec) if index >= start and spec is not None else None
        if teacher is not None:
            parents.append({"model_id": teacher[1], "role": "teacher"})
            if cat is not None:
                inputs.append(describe_input(teacher[0], teacher[1], []))
        key = step_key(parents, serial, fingerprint, seed)
        if index < start:  # recorded before and its result is on disk: take it from there
            prior = cat.step(key) if cat is not None else None
            assert prior is not None and prior.child_id is not None
            records.append(_record_from_entry(prior, parent_id))
            summaries.append(CompressionSummary(f"reused: {prior.summary}", prior.details))
            reused.append(True)
            parent_id = prior.child_id
            if index == start - 1 and reused_model is not None:
                loaded = reused_model
            continue
        work = work_dir(cat, target, key)
        ctx = host.context(calibration=calibration, seed=seed, progress=progress,
                           teacher=teacher[0] if teacher else None, work_dir=work)
        adapter = host.adapter_for(loaded)
        reset_peak()
        with Stopwatch() as watch:
            summary = info.create().compress_(loaded, adapter, config, ctx)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)  # the step is done: its checkpoints are not needed
        peak = peak_rss_bytes()  # the step's own peak, before hashing the result adds its buffers
        loaded.path = None  # the in-memory model no longer matches any file
        child_id = content_id(loaded.model)
        records.append(StepRecord(
            method=info.name, family=info.family, config=serial, plugin=info.plugin,
            plugin_version=info.plugin_version, versions=runtime_versions(), parent_id=parent_id,
            step_id=key, child_id=child_id, parents=parents, calibration=calibration_spec,
            # Recorded whenever the step was given calibration data: a compressor may not need it
            # itself but rank with a scorer that does (prune.unstructured with a data-aware scorer).
            calibration_fingerprint=fingerprint, seed=seed, wall_time_s=round(watch.seconds, 4),
            peak_rss_bytes=peak, summary=summary.description, details=dict(summary.details),
        ))
        summaries.append(summary)
        reused.append(False)
        parent_id = child_id

    provenance = build_provenance(model=loaded.model, child_id=parent_id, base=base, steps=records,
                                  parent=origin, recipe=recipe.model_dump(mode="json", exclude={"base_dir"}))
    if target is not None:
        save_model(loaded, target, provenance, overwrite=overwrite)
        loaded.path = target
    loaded.provenance = provenance
    after_records = evaluate_all(host, validated, loaded, progress)
    provenance["evaluations"] = after_records
    if target is not None and after_records:
        _rewrite_json(target / PROVENANCE_FILE, provenance)
    if cat is not None:
        for described in inputs:
            record_input(cat, described, run_id)
        size = disk_bytes(target) if target is not None else None
        params = sum(p.numel() for p in loaded.model.parameters())
        cat.record_provenance(provenance, location=str(target.resolve()) if target else None,
                              size_bytes=size, params=params, run_id=run_id, name=name)
    return RunResult(
        loaded, target, records, summaries,
        {r["evaluator"]: r["metrics"] for r in before_records},
        {r["evaluator"]: r["metrics"] for r in after_records},
        provenance, reused, run_id,
    )


def work_dir(cat: "Catalogue | None", target: Path | None, key: str) -> Path | None:
    """Where a step keeps checkpoints across an interrupted run: beside the catalogue's artifacts,
    else beside the output folder; named after the step key, so a rerun finds them."""
    digest = key.rpartition(":")[2]  # "sha256:<hex>": no colon in a folder name
    if cat is not None:
        from slimkit.core.catalogue.artifacts import artifact_dir

        return artifact_dir(cat) / ".work" / digest[:32]
    if target is not None:
        return target.parent / f".{target.name}.work-{digest[:16]}"
    return None


def _reusable_prefix(
    cat: "Catalogue", planned: list[Any], parent_id: str, fingerprint: str | None
) -> tuple[int, LoadedModel | None]:
    """How many leading steps are already in the catalogue with a loadable result.

    Step ids only depend on the parent id, so the chain can be followed through the catalogue
    without computing anything; the furthest step whose model is still on disk wins.
    """
    best: tuple[int, LoadedModel | None] = (0, None)
    current = parent_id
    for index, (_, _, serial, seed) in enumerate(planned):
        prior = cat.step(step_key([{"model_id": current, "role": "input"}], serial, fingerprint, seed))
        if prior is None or prior.status != "done" or prior.child_id is None:
            break
        current = prior.child_id
        location = cat.model(current).location
        if location and Path(location, "config.json").is_file():
            try:
                candidate = load_model(location)
            except Exception:  # moved, damaged or half-deleted: recompute instead
                continue
            if content_id(candidate.model) == current:
                best = (index + 1, candidate)
    return best


def _record_from_entry(entry: Any, parent_id: str) -> StepRecord:
    return StepRecord(
        method=entry.method, family=entry.family, config=entry.config, plugin=entry.plugin,
        plugin_version=entry.plugin_version, versions=entry.versions, parent_id=parent_id, step_id=entry.id,
        child_id=entry.child_id, parents=[{"model_id": m, "role": r} for m, r in entry.parents],
        calibration=entry.calibration, calibration_fingerprint=entry.calibration_fingerprint, seed=entry.seed,
        wall_time_s=entry.wall_time_s or 0.0, peak_rss_bytes=entry.peak_rss_bytes, summary=entry.summary or "",
        details=dict(entry.details), started=entry.created.isoformat(timespec="seconds"), status=entry.status,
    )


def _rewrite_json(path: Path, document: dict[str, Any]) -> None:
    """Replace a JSON file atomically (write beside it, then rename over it)."""
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    os.replace(staging, path)
