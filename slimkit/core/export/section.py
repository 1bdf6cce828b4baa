"""A recipe's ``export:`` section: planned with the run's other checks, written after the run.

:func:`plan_exports` runs before any work (the format and params were validated with the rest of
the recipe): it decides each export's target (its ``out``, relative to the recipe's folder, or a
name beside the run's output folder) and refuses a target that cannot be used, two exports to one
path, and a run that would leave its exports' lineage nowhere (no output folder, no catalogue).
:func:`run_exports` comes after the model is saved, evaluated and recorded: every export's
``check`` first (an export refused there writes nothing, and nothing else is written), then each
export in turn, recorded under the run. The saved model stays whatever happens to its exports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimkit.core.config import MethodConfig
from slimkit.core.errors import ExportError, RecipeError, SlimkitError
from slimkit.core.export.job import prepare_export, write_export
from slimkit.core.export.result import ExportResult
from slimkit.core.export.run import record_export
from slimkit.core.export.staging import check_target, default_target

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.catalogue import Catalogue
    from slimkit.core.contracts import ProgressCallback
    from slimkit.core.host import Host
    from slimkit.core.model_io import LoadedModel
    from slimkit.core.recipe import ExportSpec, ValidatedRecipe
    from slimkit.core.registry import MethodInfo
    from slimkit.core.run_result import RunResult


@dataclass(frozen=True)
class PlannedExport:
    """One entry of the ``export:`` section with its exporter, config and checked target."""

    label: str
    spec: "ExportSpec"
    info: "MethodInfo[Any]"
    config: MethodConfig
    target: Path


def plan_exports(
    validated: "ValidatedRecipe",
    cat: "Catalogue | None",
    output: Path | None,
    overwrite: bool,
    input_path: Path | None,
) -> list[PlannedExport]:
    """Each export's target, checked; :class:`RecipeError` lists every problem at once.

    ``output`` is the run's output folder; without one, exports without ``out`` go to the
    catalogue's artifact folder. ``overwrite`` (the run's) lets an export replace an existing file.
    """
    if not validated.exports:
        return []
    recipe = validated.recipe
    if output is None and cat is None:
        raise RecipeError(["export: the run has no output folder and no catalogue, so an exported file's "
                           "model could be found nowhere; give the run an output folder (--out) or a catalogue"],
                          recipe.name)
    owned = [path for path in (input_path, output) if path is not None]
    owned += [Path(location) for location in (cat.locations() if cat is not None else ())]
    problems: list[str] = []
    planned: list[PlannedExport] = []
    taken: dict[Path, str] = {}
    for index, (spec, info, config) in enumerate(validated.exports, start=1):
        label = f"export {index} ({spec.format})"
        try:
            if spec.out is not None:
                target = recipe.resolve_path(spec.out)
            elif output is not None:
                target = default_target(output, info.name, info.cls.suffix, str(output))
            else:
                from slimkit.core.catalogue.artifacts import new_artifact_path

                assert cat is not None  # refused above otherwise
                stem = new_artifact_path(cat, recipe.name, incoming=False)
                target = stem.with_name(f"{stem.name}{info.cls.suffix or '-' + info.name}")
            target = check_target(target, info.cls.writes, overwrite, models=owned)
        except SlimkitError as error:
            problems.append(f"{label}: {error}")
            continue
        other = taken.get(target.resolve())
        if other is not None:
            problems.append(f"{label}: writes {target}, as {other} does; give each export its own 'out'")
            continue
        taken[target.resolve()] = label
        planned.append(PlannedExport(label, spec, info, config, target))
    if problems:
        raise RecipeError(problems, recipe.name)
    return planned


def run_exports(
    host: "Host",
    planned: list[PlannedExport],
    loaded: "LoadedModel",
    model_id: str,
    cat: "Catalogue | None",
    run_id: str | None,
    done: list[ExportResult],
    progress: "ProgressCallback | None" = None,
) -> list[ExportResult]:
    """Check every export, then write and record each one, appending it to ``done`` as it is
    written (so a caller that catches a later failure still has the earlier exports).

    :raises ExportError: an exporter's ``check`` refused (every refusal of every export listed;
        nothing was written).
    """
    jobs = []
    problems: list[str] = []
    for plan in planned:
        job, refused = prepare_export(host, plan.info, plan.config, loaded, plan.target, model_id=model_id,
                                      progress=progress)
        problems.extend(f"{plan.label}: {line}" for line in refused)
        jobs.append(job)
    if problems:
        raise ExportError(problems, "cannot export the run's model as the recipe asks")
    for job in jobs:
        result = write_export(job)
        done.append(record_export(cat, result, run_id) if cat is not None else result)
    return done


def export_run_result(
    host: "Host",
    planned: list[PlannedExport],
    result: "RunResult",
    cat: "Catalogue | None",
    run_id: str | None,
    progress: "ProgressCallback | None" = None,
) -> None:
    """The runner's last stage: write the run's exports into ``result.exports``.

    :raises ExportError: an export was refused or failed; it says where the model was kept and
        carries ``result`` (the run's model is saved and recorded all the same).
    """
    try:
        run_exports(host, planned, result.model, result.provenance["content_id"], cat, run_id, result.exports,
                    progress)
    except SlimkitError as error:
        from slimkit.core.present.format import short_id

        kept = f"saved to {result.output}" if result.output is not None else "recorded in the catalogue"
        problems = error.problems if isinstance(error, ExportError) else [str(error)]
        raise ExportError(problems, f"the model {short_id(result.provenance['content_id'])} was {kept}, "
                                    "but exporting it failed", result=result) from error
