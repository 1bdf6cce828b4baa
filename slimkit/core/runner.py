"""Running a recipe: validate everything, evaluate, apply each step, save, evaluate again, record.

Every step is timed and its peak memory measured; the chain of steps with their configs, plugins,
versions, calibration data and seed goes into the derived model's ``slimkit.json`` and into the
catalogue. A step the catalogue already knows (same parent, methods with their plugins, versions
and configs, data and seed: see :mod:`slimkit.core.identity`) whose result is still on disk is
reused instead of recomputed, unless ``force`` is set.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from slimkit.core.contracts import CompressionSummary, ProgressCallback, ProgressEvent
from slimkit.core.data import CalibrationData
from slimkit.core.distributed import runs as ranks
from slimkit.core.distributed.world import World, current_world
from slimkit.core.errors import RecipeError
from slimkit.core.host import Host, get_host
from slimkit.core.memory import lean_heap
from slimkit.core.model_io import PROVENANCE_FILE, LoadedModel, disk_bytes, load_model
from slimkit.core.preflight import check_disk_space, check_run, local_folder
from slimkit.core.catalogue.artifacts import is_incoming, is_remote_url, is_store_entry
from slimkit.core.catalogue.entities import StepEntry
from slimkit.core.provenance import build_provenance, runtime_versions
from slimkit.core.runtime import RuntimeSpec, placement_record
from slimkit.core.recording import describe_input, open_catalogue, record_input, recorded_run
from slimkit.core.evaluation import run_evaluation
from slimkit.core.export.section import export_run_result, plan_exports
from slimkit.core.recipe import Recipe, ValidatedRecipe
from slimkit.core.run_result import RunResult
from slimkit.core.steps import PlannedStep, run_step
from slimkit.core.stream.steps import InMemory, Streamed
from slimkit.core.stream.plan import check_streamable, memory_plan
from slimkit.core.teachers import Teachers, teacher_spec

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.catalogue import Catalogue



def evaluate_all(
    host: Host, validated: ValidatedRecipe, model: LoadedModel, progress: ProgressCallback | None
) -> list[dict[str, Any]]:
    """Run the recipe's evaluators; one record per evaluator (metrics, config, data, time)."""
    return [run_evaluation(host, spec.metric, info, config, model, progress)
            for spec, info, config in validated.evaluations]


def calibration_record(recipe: Recipe) -> dict[str, Any] | None:
    """The calibration section as steps record it (its text file as an absolute path)."""
    if recipe.calibration is None:
        return None
    spec = recipe.calibration.model_dump(mode="json")
    if spec.get("text"):
        spec["text"] = str(recipe.resolve_path(spec["text"]).resolve())
    return spec


def run_recipe(
    recipe: "Recipe | ValidatedRecipe",
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
    runtime: RuntimeSpec | None = None,
    world: World | None = None,
) -> RunResult:
    """Apply ``recipe`` to ``model`` (a :class:`LoadedModel` or anything :func:`load_model` takes).

    :param recipe: a :class:`Recipe`, or one already resolved against ``host``
        (:meth:`Recipe.resolve`), which is then not resolved again.
    :param out: save the derived model here (Hugging Face folder + ``slimkit.json``).
    :param overwrite: replace ``out`` if it exists (only once the new model is fully written).
    :param inplace: change the given :class:`LoadedModel` itself instead of a copy.
    :param catalogue: record the run there (``None``: the default catalogue; ``False``: nowhere).
    :param force: recompute steps the catalogue already has results for.
    :param name: a unique name for the derived model in the catalogue.
    :param runtime: precision, device and streaming (default: the recipe's ``runtime:`` section).
        With ``stream``, ``model`` must be a folder or hub id, and ``out`` or a catalogue is needed.
    :param world: the ranks of a data-parallel run (default: the initialised ``torch.distributed``
        process group, if it has several ranks). Every rank calls ``run_recipe`` with the same
        arguments; rank 0 alone evaluates, saves, records and returns the full result, the others
        return theirs without output, evaluations or run id. Steps are always recomputed.
    :raises RecipeError: before any work, listing every problem with the recipe and the model.
    :raises OutputError: before any work: the output folder, the name or the free space do not do.
    :raises ExportError: after the model was saved and recorded, an export of the recipe's
        ``export:`` section was refused or failed (``error.result`` is the run's result).
    """
    lean_heap()  # freed tensors back to the system, not kept as heap (see slimkit.core.memory)
    host = host or get_host()
    validated = recipe if isinstance(recipe, ValidatedRecipe) else recipe.resolve(host)
    runtime = runtime or validated.recipe.runtime or RuntimeSpec()
    world = world or current_world()
    if runtime.ranks > 1 and not world.distributed:  # start the ranks; they run this function
        from slimkit.core.distributed.spawn import run_on_ranks

        return run_on_ranks(validated.recipe, model, runtime, out=out, overwrite=overwrite, catalogue=catalogue,
                            force=force, name=name, progress=progress, host=host)
    if world.distributed:  # before anything is opened: the ranks were started alike, or nothing runs
        world.agree(ranks.start_facts(validated.recipe.to_yaml(), model, runtime), "recipe, model or runtime")
        force = True  # a rank cannot take a step from a catalogue only rank 0 reads
        if not world.leader:
            catalogue, out, name, progress = False, None, None, None
    cat = open_catalogue(catalogue)
    input_path = model.path if isinstance(model, LoadedModel) else local_folder(model)
    target = check_run(cat, out, overwrite, name, input_path, publish=None if out is not None else False)
    plan = memory_plan(host, validated, model, target, runtime)
    # every rank streams if rank 0 must (memory differs between processes; the ranks must not)
    if world.broadcast_object(plan.stream, 0, "agreeing on streaming") and not runtime.stream:
        runtime = runtime.model_copy(update={"stream": True})
    if runtime.stream and target is None and cat is not None:
        from slimkit.core.catalogue.artifacts import new_artifact_path

        target = check_run(cat, new_artifact_path(cat, name or validated.recipe.name), overwrite, name, input_path)
    scratch = ranks.scratch_target(world) if runtime.stream and not world.leader else None
    target = scratch or target
    if runtime.stream:
        check_streamable(host, validated, model, target)
    if plan.note and progress is not None:
        progress(ProgressEvent("plan", 0, 0, plan.note))
    exports = plan_exports(validated, cat, target, overwrite, input_path) if world.leader else []
    recording = recorded_run(cat, "recipe", validated.recipe.name, validated.recipe.to_yaml())
    with contextlib.ExitStack() as scratch_removal, recording as run_id:
        # The run row is the catalogue's first write: a read-only catalogue fails here, before work.
        scratch_removal.callback(ranks.remove_scratch, scratch)  # (a rank's own blocks, if it streams)
        flow: InMemory | Streamed = InMemory()
        if isinstance(model, LoadedModel):
            loaded = model if inplace else copy.deepcopy(model)
        elif runtime.stream:
            assert target is not None
            flow = Streamed(host, target, runtime.dtype, runtime.device, progress, cat, run_id)
            loaded = flow.open(model)
        else:
            loaded = load_model(model, dtype=runtime.dtype, device=runtime.device)
        if target is not None:
            check_disk_space(target, loaded.stream.source.nbytes if loaded.stream else state_bytes(loaded.model))
        calibration = validated.recipe.calibration_data(loaded)
        if world.distributed and calibration is not None:
            world.check_samples(calibration.n_samples)
            world.agree({"calibration": calibration.fingerprint}, "calibration data")
            calibration = calibration.split(world)
        problems = validated.check_model(host, loaded, calibration)
        if problems:
            raise RecipeError(problems, validated.recipe.name)
        try:
            result = _execute(host, validated, loaded, calibration, cat, run_id, target, overwrite, progress,
                              force, name, flow, world)
        except BaseException:
            if isinstance(flow, Streamed):
                flow.cleanup()
            raise
        if exports:  # after the model is saved, evaluated and recorded: it stays whatever happens here
            export_run_result(host, exports, result, cat, run_id, progress)
        return result


def state_bytes(model: Any) -> int:
    """Bytes of a model's weights and buffers: what saving it writes, near enough."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def _execute(
    host: Host,
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
    flow: "InMemory | Streamed",
    world: World,
) -> RunResult:
    recipe = validated.recipe
    parent_id = flow.identify(loaded)
    world.agree({"input model": parent_id}, "input model")
    # Teachers first: a teacher that cannot be loaded fails the run before any evaluation or step.
    teachers = Teachers([(info, config) for _, info, config in validated.steps], loaded, parent_id)
    before_records = evaluate_all(host, validated, loaded, progress) if world.leader else []
    base = {"source": loaded.source, "content_id": parent_id, "architecture": loaded.architecture}
    origin = loaded.provenance  # the chain that led to the input model, if it was derived
    # The inputs are described now (the model changes in place below) and recorded with the
    # result: a run that fails or is cancelled leaves the catalogue's models as they were.
    inputs = [describe_input(loaded, parent_id, before_records)] if cat is not None else []

    fingerprint = calibration.fingerprint if calibration is not None else None
    calibration_spec = calibration_record(recipe)
    planned = validated.planned()

    start, reused_model = (0, None) if cat is None or force else \
        _reusable_prefix(cat, planned, parent_id, fingerprint, flow)
    records: list[StepEntry] = []
    summaries: list[CompressionSummary] = []
    reused: list[bool] = []
    for index, step in enumerate(planned):
        parents = [{"model_id": parent_id, "role": "input"}]
        spec = teacher_spec(step.info, step.config)
        teacher = teachers.get(spec) if index >= start and spec is not None else None
        if teacher is not None:
            parents.append({"model_id": teacher[1], "role": "teacher"})
            if cat is not None:
                inputs.append(describe_input(teacher[0], teacher[1], []))
        key = step.key(parents, fingerprint)
        if index < start:  # recorded before and its result is on disk: take it from there
            prior = cat.step(key) if cat is not None else None
            assert prior is not None and prior.child_id is not None
            records.append(prior)
            summaries.append(CompressionSummary(f"reused: {prior.summary}", prior.details))
            reused.append(True)
            parent_id = prior.child_id
            if index == start - 1 and reused_model is not None:
                loaded = reused_model
            continue
        work = work_dir(cat, target, key)
        # a data-parallel step is not resumed: the ranks would have to agree on what each finished
        loaded = flow.begin(loaded, key, step.info.cls.resumable and not world.distributed)
        outcome = run_step(host, step, loaded, calibration=calibration, progress=progress,
                           teacher=teacher[0] if teacher else None, work_dir=work)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)  # the step is done: its checkpoints are not needed
        details = dict(outcome.summary.details)
        if world.distributed:
            if not flow.streamed:  # (a streamed model's blocks were compared one by one by the engine)
                ranks.check_same_model(world, loaded.model, index + 1, step.info.name)
            details["data_parallel"] = ranks.ranks_record(world, outcome.peak_rss_bytes)
        child_id = flow.end(loaded)
        records.append(StepEntry(
            id=key, child_id=child_id, parents=tuple((p["model_id"], p["role"]) for p in parents),
            method=step.info.name, family=step.info.family, config=step.serial, plugin=step.info.plugin,
            plugin_version=step.info.plugin_version, versions={**runtime_versions(), **placement_record(loaded)},
            uses=tuple(use.to_json() for use in step.uses), calibration=calibration_spec,
            # Recorded whenever the step was given calibration data: a compressor may not need it
            # itself but rank with a scorer that does (prune.unstructured with a data-aware scorer).
            calibration_fingerprint=fingerprint, seed=step.seed, wall_time_s=round(outcome.seconds, 4),
            peak_rss_bytes=outcome.peak_rss_bytes, summary=outcome.summary.description,
            details=details,
        ))
        summaries.append(outcome.summary)
        reused.append(False)
        parent_id = child_id

    if not world.leader:  # rank 0 saves, evaluates and records; this rank's part is done
        return RunResult(loaded, None, records, summaries, reused=reused)
    provenance = build_provenance(model=loaded.model, child_id=parent_id, base=base, steps=records,
                                  parent=origin, recipe=recipe.model_dump(mode="json", exclude={"base_dir"}))
    shared = _shared_folder(cat, target, parent_id)
    if shared is not None:  # an identical run already saved these weights in the catalogue's folder
        target = shared
    elif target is not None:
        flow.save(loaded, target, provenance, overwrite)
    if target is not None:
        loaded.path = target
    loaded.provenance = provenance
    # a streamed result is read again from its folder (block by block) to be evaluated
    evaluated = flow.reopen(str(target)) if flow.streamed and target is not None and validated.evaluations \
        else loaded
    after_records = evaluate_all(host, validated, evaluated, progress)
    provenance["evaluations"] = after_records
    if target is not None and after_records and shared is None:
        _rewrite_json(target / PROVENANCE_FILE, provenance)
    location = str(target.resolve()) if target is not None else None
    if cat is not None and shared is None and is_incoming(target):  # no --out: into the artifact store
        assert target is not None
        from slimkit.core.artifact_store.access import publish_result

        target, location = publish_result(cat, target, parent_id, name)
    if cat is not None:
        for described in inputs:
            record_input(cat, described, run_id)
        size = disk_bytes(target) if target is not None else None
        params = sum(p.numel() for p in loaded.model.parameters())
        entry = cat.record_provenance(provenance, location=location,
                                      size_bytes=size, params=params, run_id=run_id, name=name)
        target = _settle_folder(cat, target, entry.location)
        loaded.path = target
    return RunResult(
        loaded, target, records, summaries,
        {r["evaluator"]: r["metrics"] for r in before_records},
        {r["evaluator"]: r["metrics"] for r in after_records},
        provenance, reused, run_id,
    )


def _managed(cat: "Catalogue | None", target: Path | None) -> bool:
    """Whether ``target`` is a folder of the catalogue's artifact folder (which ``gc`` tidies)."""
    if cat is None or target is None:
        return False
    from slimkit.core.catalogue.artifacts import artifact_dir

    return target.resolve().parent == artifact_dir(cat).resolve()


def _shared_folder(cat: "Catalogue | None", target: Path | None, model_id: str) -> Path | None:
    """The catalogue's folder of ``model_id`` when this run would save a second copy of it into
    the artifact folder (an identical run finished first): the run then reports that folder."""
    if not _managed(cat, target) or cat is None:
        return None
    from slimkit.core.catalogue import CatalogueError

    try:
        location = cat.model(model_id).location
    except CatalogueError:
        return None
    if location and Path(location, "config.json").is_file():
        return Path(location)
    return None


def _settle_folder(cat: "Catalogue", target: Path | None, recorded: str | None) -> Path | None:
    """After recording: if an identical run started together recorded its own copy first, the
    catalogue keeps that one; this run's managed copy is removed (``gc`` would remove it later,
    after this run reported it as saved) and the run reports the recorded folder instead."""
    if target is None or recorded is None or Path(recorded).resolve() == target.resolve():
        return target
    # never a published model: other catalogues sharing the store may refer to it
    if _managed(cat, target) and not is_store_entry(target) and Path(recorded, "config.json").is_file():
        shutil.rmtree(target, ignore_errors=True)
        return Path(recorded)
    return target


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
    cat: "Catalogue", planned: list[PlannedStep], parent_id: str, fingerprint: str | None, flow: "InMemory | Streamed"
) -> tuple[int, LoadedModel | None]:
    """How many leading steps are already in the catalogue with a loadable result.

    Step ids only depend on the parent id, so the chain can be followed through the catalogue
    without computing anything; the furthest step whose model is still on disk wins.
    """
    best: tuple[int, LoadedModel | None] = (0, None)
    current = parent_id
    for index, step in enumerate(planned):
        prior = cat.step(step.key([{"model_id": current, "role": "input"}], fingerprint))
        if prior is None or prior.status != "done" or prior.child_id is None:
            break
        current = prior.child_id
        location = _local(cat, current, cat.model(current).location)
        if location and Path(location, "config.json").is_file():
            try:
                candidate = flow.reopen(location)
                found = flow.identify(candidate)
            except Exception:  # moved, damaged or half-deleted: recompute instead
                continue
            if found == current:
                best = (index + 1, candidate)
    return best


def _local(cat: "Catalogue", model_id: str, location: str | None) -> str | None:
    """A remote store's model as a local, verified copy (fetched into the cache), to be reused;
    ``None`` when it cannot be had (the step is then recomputed)."""
    if not location or not is_remote_url(location):
        return location
    from slimkit.core.artifact_store.access import stored_folder
    from slimkit.core.errors import SlimkitError

    try:
        return str(stored_folder(cat, model_id, location, model_id.rpartition(":")[2][:12]))
    except SlimkitError:
        return None


def _rewrite_json(path: Path, document: dict[str, Any]) -> None:
    """Replace a JSON file atomically (write beside it, then rename over it)."""
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    os.replace(staging, path)
