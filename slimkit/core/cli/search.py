"""``slimkit sweep`` and ``slimkit search``: many recipes at once, the catalogue as memory."""

from __future__ import annotations

import sys
from typing import Any, Callable

import click

from slimkit.core.cli.render import ProgressBars, print_json, table
from slimkit.core.cli.state import get_catalogue_from, get_host_from
from slimkit.core.present.format import duration, metric_value, short_id


def _options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed([
        click.argument("file", metavar="FILE", type=click.Path(dir_okay=False)),
        click.option("--model", "-m", "model_spec", required=True,
                     help="Model folder, catalogued name or id, hub id, or example:stories260K."),
        click.option("--executor", type=click.Choice(["inline", "pool", "ray"]), default="inline", show_default=True,
                     help="Run trials in this process, in --workers local processes, or on a Ray cluster."),
        click.option("--workers", type=click.IntRange(1, 256), default=2, show_default=True,
                     help="Trials at a time (pool, ray); the threads are divided among them."),
        click.option("--address", default=None, metavar="ADDR",
                     help="Ray cluster: auto (RAY_ADDRESS, or one running here), HOST:PORT, or local (start one of "
                          "--workers CPUs for this search). Default: auto."),
        click.option("--plot", "plot_path", type=click.Path(dir_okay=False), metavar="FILE",
                     help="Draw the trials and the front (PNG, SVG or PDF) to FILE."),
        click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
        click.option("--no-progress", is_flag=True, help="Do not print a line per trial or draw progress bars."),
        click.option("--dry-run", is_flag=True, help="Check FILE and show its space and goals; run nothing."),
    ]):
        command = option(command)
    return command


@click.command()
@_options
@click.pass_context
def sweep(ctx: click.Context, file: str, model_spec: str, executor: str, workers: int, address: str | None,
          plot_path: str | None, as_json: bool, no_progress: bool, dry_run: bool) -> None:
    """Run every combination of FILE's choices on MODEL, each a recorded trial.

    FILE is a recipe whose step params may list values (sparsity: [0.3, 0.5]), whose steps may
    list methods (method: [prune.wanda, prune.sparsegpt]) or be optional, with objectives and
    constraints for the front. Steps shared by trials run once; trials the catalogue already has
    are taken from there.
    """
    if dry_run:
        return _dry_run(ctx, "sweep", file, as_json)
    _run(ctx, "sweep", file, model_spec, executor, workers, address, plot_path, as_json, no_progress)


@click.command()
@_options
@click.option("--budget", metavar="BUDGET", help="trials=N, time=DURATION (e.g. 30m), or both: trials=20,time=1h "
              "(default: the file's budget:). Trials the catalogue already has do not count.")
@click.option("--sampler", type=click.Choice(["tpe", "nsga2", "random"]), help="Optuna sampler (default: the file's).")
@click.option("--seed", type=int, help="The sampler's seed (default: the file's seed).")
@click.pass_context
def search(ctx: click.Context, file: str, model_spec: str, executor: str, workers: int, address: str | None,
           plot_path: str | None, as_json: bool, no_progress: bool, dry_run: bool, budget: str | None,
           sampler: str | None, seed: int | None) -> None:
    """Search FILE's space on MODEL for the best recipes under a budget (Optuna).

    The objectives (minimize perplexity, minimize size...) and constraints (size <= 0.3 x base...)
    come from FILE. Every trial the catalogue holds for this model and these evaluation settings
    is loaded into the study first: a second search starts where the first stopped.
    """
    from slimkit.core.search.spec import Budget

    chosen = Budget.parse(budget) if budget else None
    if dry_run:
        return _dry_run(ctx, "search", file, as_json)
    _run(ctx, "search", file, model_spec, executor, workers, address, plot_path, as_json, no_progress,
         budget=chosen, sampler=sampler, seed=seed)


def _run(ctx: click.Context, kind: str, file: str, model_spec: str, executor: str, workers: int,
         address: str | None, plot_path: str | None, as_json: bool, no_progress: bool, **options: Any) -> None:
    from slimkit.core.search import load_search, run_search, run_sweep

    spec = load_search(file)
    if plot_path is not None:
        _check_plot_target(plot_path)
    finished: list[Any] = []
    quiet = as_json or no_progress
    with ProgressBars(enabled=not quiet) as bars:
        def on_event(event: Any) -> None:
            if event.kind in {"done", "failed"}:
                finished.append(event.trial)
            if quiet:
                return
            if event.kind == "progress":
                bars(event.event)
            elif event.kind not in {"full", "base"}:
                bars._progress.console.print(_event_line(event), highlight=False, markup=False)

        runner = run_sweep if kind == "sweep" else run_search
        try:
            result = runner(spec, model_spec, executor=executor, workers=workers, address=address,
                            catalogue=get_catalogue_from(ctx), host=get_host_from(ctx), on_event=on_event, **options)
        except KeyboardInterrupt:
            done = sum(1 for t in finished if t.status == "done")
            click.echo(f"Interrupted: {done} finished trial(s) are in the catalogue; run the same command again to "
                       "resume (they are taken from there, not run again).", err=True)
            sys.exit(130)
    if plot_path is not None:
        from slimkit.core.search.plot import plot_front

        plot_front(result, plot_path)
    if as_json:
        print_json(result.to_dict())
        return
    show_search(result)
    if plot_path is not None:
        click.echo(f"plot: {plot_path}")


def _dry_run(ctx: click.Context, kind: str, file: str, as_json: bool) -> None:
    """The space's dimensions, how many points it has and which are refused, and the goals."""
    from slimkit.core.search import load_search, prepare

    prepared = prepare(load_search(file), get_host_from(ctx), kind)  # type: ignore[arg-type]
    dimensions = [(d.name, d.kind, d.describe()) for d in prepared.space.dimensions()]
    goals = prepared.goals
    objectives, constraints = [str(o) for o in goals.objectives], [c.text for c in goals.constraints]
    refused = [{"recipe": prepared.space.label(p), "why": why} for p, why in prepared.refused]
    summary: dict[str, Any] = {"dimensions": [dict(zip(("name", "kind", "values"), row)) for row in dimensions],
               "objectives": objectives, "constraints": constraints,
               "points": len(prepared.points) if kind == "sweep" else None, "refused": refused}
    if as_json:
        return print_json(summary)
    table(f"{kind} {prepared.spec.name or ''}: the space", ["dimension", "kind", "values"], dimensions)
    if kind == "sweep":
        click.echo(f"{len(prepared.points)} combination(s) to run, {len(prepared.refused)} refused "
                   "(the model's own checks come when it is loaded)")
    for entry in refused:
        click.echo(f"refused: {entry['recipe']}: {entry['why']}")
    click.echo(f"objectives: {'; '.join(objectives) or 'none'}; constraints: {'; '.join(constraints) or 'none'}")
    return None


def _check_plot_target(path: str) -> None:
    """A --plot that cannot be written is refused before any trial runs."""
    from pathlib import Path

    from slimkit.core.errors import SlimkitError

    target = Path(path).expanduser()
    if target.suffix.lower() not in {".png", ".svg", ".pdf"}:
        raise SlimkitError(f"--plot {path}: name a .png, .svg or .pdf file")
    folder = target.parent
    if not folder.is_dir():
        raise SlimkitError(f"--plot {path}: no such folder {folder}")
    import os

    if not os.access(folder, os.W_OK):
        raise SlimkitError(f"--plot {path}: the folder {folder} is not writable")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SlimkitError("--plot needs matplotlib: pip install 'slimkit[search]'") from None


def _event_line(event: Any) -> str:
    trial = event.trial
    if trial is None:
        return event.message
    head = f"trial {trial.number}"
    if event.kind == "start":
        return f"{head}: {trial.label}"
    if event.kind == "catalogue":
        return f"{head} from the catalogue: {trial.label}"
    if event.kind == "done":
        values = ", ".join(f"{k}={_value(k, v)}" for k, v in trial.metrics.items() if _shown(k))
        return f"{head} done in {duration(trial.seconds)}: {values} ({_steps(trial)})"
    return f"{head} {event.kind}: {event.message}"


def _shown(key: str) -> bool:
    return key == "size" or not (key == "params" or key.endswith((".tokens", ".windows", ".nll", ".pairs", ".threads")))


def _steps(trial: Any) -> str:
    return f"steps: {trial.steps_run} run, {trial.steps_reused} reused"


def show_search(result: Any) -> None:
    """The trials as a table (front marked), the front, and what the catalogue saved."""
    goals = result.goals
    keys = goals.keys if goals else []
    rows = []
    front = {t.number for t in result.front}
    for trial in result.trials:
        values = trial.values()
        cells = [_value(key, values.get(key)) for key in keys]
        rows.append([str(trial.number), ("* " if trial.number in front else "") + trial.label, trial.status,
                     *cells, "-" if trial.feasible is None else ("yes" if trial.feasible else "no"),
                     f"{trial.steps_run}/{trial.steps_reused}", short_id(trial.model_id) if trial.model_id else "-"])
    base = result.base_full or result.base_metrics
    rows.append(["base", "input model", "", *[_value(key, base.get(key)) for key in keys], "", "",
                 short_id(result.base_id) if result.base_id else "-"])
    table(f"{result.kind} {result.name or ''} (* on the front)", ["#", "recipe", "status", *keys, "feasible",
                                                                  "steps run/reused", "model"], rows)
    for trial in result.trials:
        if trial.status in {"failed", "invalid"} and trial.error:
            click.echo(f"trial {trial.number} {trial.status}: {trial.error}")
    counts = result.counts
    click.echo(f"{len(result.trials)} trials: {counts['done']} run, {counts['catalogue']} from the catalogue, "
               f"{counts['failed']} failed, {counts['invalid']} not valid; steps: {result.steps_run} run, "
               f"{result.steps_reused} reused from the catalogue, {result.steps_shared} shared between trials; "
               f"{duration(result.seconds)}")
    for note in result.notes:
        click.echo(note)
    if result.stopped:
        click.echo(result.stopped)
    if goals and goals.objectives:
        listed = ", ".join(f"#{t.number}" for t in result.front) or "none (no finished trial meets the constraints)"
        click.echo(f"front ({'; '.join(str(o) for o in goals.objectives)}): {listed}")


def _value(key: str, value: float | None) -> str:
    return metric_value(key.rpartition(".")[2], value)


COMMANDS = [sweep, search]
