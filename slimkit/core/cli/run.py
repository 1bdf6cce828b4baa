"""``slimkit run``, ``slimkit eval`` and ``slimkit validate``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import yaml

from slimkit.core.cli.render import ProgressBars, print_json, table
from slimkit.core.cli.runtime_options import merged_runtime, runtime_options
from slimkit.core.cli.state import get_catalogue_from, get_host_from
from slimkit.core.errors import ConfigError, ExportError
from slimkit.core.present.format import comparison, duration, human_bytes, metric_value, short_id


def load_model_ref(ctx: click.Context, spec: str, runtime: Any = None) -> Any:
    """Load a model given as a path, ``example:NAME``, a catalogue name or id prefix, or a hub id
    (see :func:`slimkit.core.model_refs.load_model_ref`), in the ``--dtype``/``--device`` given,
    else ``runtime``'s (a recipe's ``runtime:`` section), else float32 on the CPU."""
    from slimkit.core.model_refs import load_model_ref as load

    chosen = merged_runtime(ctx, runtime)
    return load(spec, lambda: get_catalogue_from(ctx), dtype=chosen.dtype, device=chosen.device)


def show_result(result: Any, title: str) -> None:
    """A run's steps, then its metrics before and after (the rows the notebook repr and the panel
    show too) and the time its steps took."""
    for index, (step, reused) in enumerate(zip(result.steps, result.reused), start=1):
        how = "reused from the catalogue; --force recomputes" if reused else duration(step.wall_time_s)
        click.echo(f"step {index} {step.method}: {step.summary} ({how})")
    rows = comparison(result.comparison())
    rows.append(("compression time", "", duration(result.compression_seconds), ""))
    table(title, ["metric", "before", "after", "change"], rows)


@click.command()
@click.argument("recipe")
@click.option("--model", "-m", "model_spec", required=True,
              help="Model folder, .gguf file, hub id, or example:stories260K.")
@click.option("--out", "-o", type=click.Path(),
              help="Folder to save the derived model in (default: a new folder in the catalogue's artifacts).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists (after the new model is complete).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--no-progress", is_flag=True, help="Do not draw progress bars.")
@click.option("--name", help="A unique name for the derived model in the catalogue.")
@click.option("--force", is_flag=True, help="Recompute steps the catalogue already has results for.")
@click.option("--no-record", is_flag=True, help="Do not record the run in the catalogue.")
@click.option("--stream", is_flag=True, default=None,
              help="Never hold the whole model: each block is read from the input's safetensors shards in its "
                   "turn and written to --out at once (for models larger than memory).")
@click.option("--max-memory", metavar="SIZE",
              help="Memory budget, e.g. 6GiB (default: what the machine has available): a run that would not fit "
                   "streams, one that would not fit streamed is refused before it starts.")
@click.option("--nproc", type=click.IntRange(1, 512), metavar="N",
              help="Run as N data-parallel ranks on this machine (torchrun's workers; gloo on CPUs, NCCL on GPUs; the "
                   "recipe's runtime: ranks): each calibrates on its share of the samples, statistics are summed at "
                   "every block, rank 0 saves and records. Several machines: torchrun --nnodes ... -m slimkit run "
                   "(see docs/distributed.md).")
@runtime_options
@click.pass_context
def run(ctx: click.Context, recipe: str, model_spec: str, out: str | None, overwrite: bool, as_json: bool,
        no_progress: bool, name: str | None, force: bool, no_record: bool, stream: bool | None,
        max_memory: str | None, nproc: int | None) -> None:
    """Apply RECIPE (a YAML file or example:NAME) to a model and save the derived model."""
    from slimkit.core.distributed.world import launched_by_torchrun
    from slimkit.core.export.section import plan_exports
    from slimkit.core.preflight import check_run, local_folder
    from slimkit.core.recipe import load_recipe
    from slimkit.core.runner import run_recipe

    host = get_host_from(ctx)
    started = time.perf_counter()
    if out is None and no_record:
        raise click.UsageError("--out is needed with --no-record (there is no catalogue to keep the model in)")
    parsed = load_recipe(recipe)
    validated = parsed.resolve(host)  # everything the model does not decide, before loading it; resolved once
    world = _join(ctx, nproc, parsed) if launched_by_torchrun() else None
    leader = world is None or world.leader
    catalogue: Any = False if no_record or not leader else get_catalogue_from(ctx)
    if leader:  # the output folder and the name, before the model loads (run_recipe checks them again)
        check_run(catalogue or None, out, overwrite, name, local_folder(model_spec))
    if out is None and leader:
        from slimkit.core.catalogue.artifacts import new_artifact_path

        out = str(new_artifact_path(catalogue, name or parsed.name))
    if leader and out is not None:  # the recipe's exports' targets too (run_recipe checks them again, cheaply)
        plan_exports(validated, catalogue or None, Path(out), overwrite, local_folder(model_spec))
    from slimkit.core.model_refs import model_location
    from slimkit.core.stream.cost import parse_bytes
    from slimkit.core.stream.plan import memory_plan

    if max_memory is not None:
        parse_bytes(max_memory)  # a malformed size: said now
    runtime = merged_runtime(ctx, parsed.runtime, stream=stream or None, max_memory=max_memory, ranks=nproc)
    location = model_location(model_spec, lambda: get_catalogue_from(ctx))
    if not runtime.stream and memory_plan(host, validated, location, Path(out) if out else None, runtime).stream:
        runtime = runtime.model_copy(update={"stream": True})  # too big for memory: run_recipe says so
    if runtime.stream or (runtime.ranks > 1 and world is None):  # opened inside the run (by each rank)
        model: Any = location
    else:
        model = load_model_ref(ctx, model_spec, parsed.runtime)
    try:
        with ProgressBars(enabled=not (no_progress or as_json) and leader) as bars:
            result = run_recipe(validated, model, out=out, overwrite=overwrite, host=host, progress=bars,
                                inplace=True, catalogue=catalogue, force=force, name=name, runtime=runtime,
                                world=world)
    except ExportError as error:  # the model was saved and recorded; an export was not: say both
        if error.result is None:
            raise
        _report(error.result, parsed.name or recipe, model_spec, started, as_json, catalogue, name)
        raise
    if leader:  # rank 0 speaks for a data-parallel run
        _report(result, parsed.name or recipe, model_spec, started, as_json, catalogue, name)


def _join(ctx: click.Context, nproc: int | None, parsed: Any) -> Any:
    """This process's rank, started by torchrun; a SIGTERM from the launcher
    becomes an error of the run (recorded as failed), not a silent exit."""
    import os

    from slimkit.core.distributed.join import join, stop_on_sigterm

    started_as = int(os.environ["WORLD_SIZE"])
    if nproc is not None and nproc != started_as:
        raise click.UsageError(f"--nproc {nproc}, but this process is one of {started_as} ranks started by torchrun")
    world = join(merged_runtime(ctx, parsed.runtime).device)
    ctx.call_on_close(stop_on_sigterm(world))  # disarmed once the command is over
    return world


def _report(result: Any, recipe: str, model_spec: str, started: float, as_json: bool, catalogue: Any,
            name: str | None) -> None:
    total = time.perf_counter() - started
    if as_json:
        print_json({
            "output": str(result.output), "content_id": result.provenance["content_id"],
            "steps": [step.to_json() for step in result.steps],
            "before": result.before, "after": result.after, "total_seconds": total,
            "reused": result.reused, "run_id": result.run_id, "exports": [e.to_dict() for e in result.exports],
        })
        return
    show_result(result, f"{recipe} on {model_spec}")
    click.echo(f"saved {result.output} ({short_id(result.provenance['content_id'])}) in {duration(total)}")
    for export in result.exports:
        click.echo(f"exported {export.format} to {export.path} ({human_bytes(export.size_bytes)}, "
                   f"{short_id(export.sha256)}): {export.summary.description}")
    if catalogue:
        known = catalogue.model(result.provenance["content_id"])
        if name and known.name != name:
            click.echo(f"note: these weights were already in the catalogue as {known.label!r}; "
                       f"the name {name!r} was not applied")


def _parse_params(items: tuple[str, ...], methods: list[str], *, single: bool = False,
                  kind: str = "evaluator") -> dict[str, dict[str, Any]]:
    """``--param`` items as ``{method: {field: value}}`` (values parsed as YAML).

    ``METHOD:FIELD=VALUE`` names the method outright; in ``METHOD.FIELD=VALUE`` the method is the
    longest of ``methods`` the key starts with (then a dot), so dotted names work: ``qa.top1.text=x``
    is field ``text`` of ``qa.top1``. With ``single`` (one method), a bare ``FIELD=VALUE`` is for it.
    Config fields have no dots and method names no colons, so neither form can be ambiguous.
    """
    params: dict[str, dict[str, Any]] = {method: {} for method in methods}
    usage = "FIELD=VALUE" if single else "METRIC.FIELD=VALUE or METRIC:FIELD=VALUE"
    running = f"the {kind}s being run ({', '.join(methods)})"
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--param takes {usage}, got {item!r}")
        method, colon, field = key.partition(":")
        if colon and method not in params:
            raise ConfigError(f"--param {item!r} is for {method!r}, which is not among {running}")
        if not colon:
            method = max((m for m in methods if key.startswith(f"{m}.")), key=len, default="")
            if method:
                field = key[len(method) + 1:]
            elif single and "." not in key:
                method, field = methods[0], key
            else:
                raise ConfigError(f"--param {item!r} names none of {running}; write {usage}")
        if not field or "." in field:
            raise ConfigError(f"--param {item!r} has no valid FIELD for {kind} {method!r}; write {usage}")
        params[method][field] = yaml.safe_load(raw)
    return params


@click.command(name="eval")
@click.argument("model_spec", metavar="MODEL")
@click.option("--metric", "metrics", multiple=True,
              help="Evaluator to run (repeatable; default: size, plus perplexity for causal LMs).")
@click.option("--param", "-p", "param_items", multiple=True, metavar="METRIC.FIELD=VALUE",
              help="A parameter of one evaluator (repeatable), e.g. perplexity.max_windows=20. For a dotted "
                   "evaluator name the longest --metric prefix wins (qa.top1.text=x); METRIC:FIELD=VALUE "
                   "names it outright (qa.top1:text=x).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--no-record", is_flag=True, help="Do not record the results in the catalogue.")
@click.option("--stream", is_flag=True,
              help="Never hold the whole model: all windows go through one block at a time, each read from "
                   "MODEL's safetensors shards in its turn (for models larger than memory; evaluators that "
                   "stream only, such as perplexity, which is then the default).")
@runtime_options
@click.pass_context
def evaluate(ctx: click.Context, model_spec: str, metrics: tuple[str, ...], param_items: tuple[str, ...],
             as_json: bool, no_record: bool, stream: bool) -> None:
    """Evaluate MODEL with one or more evaluators."""
    from slimkit.core.evaluation import evaluate_model
    from slimkit.core.model_io import is_causal_lm

    host = get_host_from(ctx)
    for metric in metrics:
        info = host.evaluators.get(metric)  # unknown names fail before the model loads
        if stream and not info.cls.streams:  # so do evaluators that need the whole model
            raise ConfigError(f"eval --stream: evaluator {metric!r} needs the model in memory; run it without "
                              "--stream")
    chosen = list(metrics)
    params = _parse_params(param_items, chosen) if chosen else {}  # so do bad --param items
    model = _open_streamed(ctx, model_spec) if stream else load_model_ref(ctx, model_spec)
    if not chosen:
        chosen = [] if stream else ["size"]  # size counts non-zero weights: it needs them in memory
        if model.tokenizer is not None and is_causal_lm(model.model):
            chosen.append("perplexity")
        if not chosen:
            raise ConfigError(f"eval --stream: {model_spec} is not a causal language model with a tokenizer, and "
                              "perplexity is the only default evaluator that streams; name one with --metric")
        params = _parse_params(param_items, chosen)
    catalogue: Any = False if no_record else get_catalogue_from(ctx)
    with ProgressBars(enabled=not as_json) as bars:
        results = evaluate_model(model, params, host=host, catalogue=catalogue, progress=bars)
    if as_json:
        print_json({"model": model_spec, "metrics": results})
        return
    table(str(model_spec), ["metric", "value"],
          [(f"{m}.{k}", metric_value(k, v)) for m, values in results.items() for k, v in values.items()])


def _open_streamed(ctx: click.Context, spec: str) -> Any:
    """``spec`` (a path, ``example:NAME``, a catalogue name or id prefix, or a hub id) opened block by
    block, in the ``--dtype``/``--device`` given."""
    from slimkit.core.model_refs import model_location
    from slimkit.core.stream.opening import open_streamed

    chosen = merged_runtime(ctx)
    location = model_location(spec, lambda: get_catalogue_from(ctx))
    return open_streamed(location, get_host_from(ctx), dtype=chosen.dtype, device=chosen.device)


@click.command()
@click.argument("model_spec", metavar="MODEL")
@click.option("--scorer", "-s", required=True, help="Installed scorer, e.g. magnitude.")
@click.option("--param", "-p", "param_items", multiple=True, metavar="FIELD=VALUE",
              help="A field of the scorer's config (repeatable), e.g. roles=[down]; SCORER.FIELD=VALUE and "
                   "SCORER:FIELD=VALUE work too.")
@click.option("--out", "-o", required=True, type=click.Path(), help="Write the scores here (safetensors).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option("--calibration", "calibration_text", type=click.Path(dir_okay=False),
              help="Text or JSONL file for scorers that need calibration data (default: the bundled sample).")
@click.option("--samples", default=16, show_default=True, type=click.IntRange(min=1), help="Calibration windows.")
@click.option("--seq-len", default=128, show_default=True, type=click.IntRange(min=2), help="Tokens per window.")
@click.option("--seed", default=0, show_default=True, help="Seed for the windows and the scorer.")
@click.option("--precision", type=click.Choice(["float32", "bfloat16"]), default="float32", show_default=True,
              help="Calibration passes in this precision (bfloat16: faster where the CPU or GPU has it).")
@runtime_options
@click.pass_context
def score(ctx: click.Context, model_spec: str, scorer: str, param_items: tuple[str, ...], out: str,
          overwrite: bool, calibration_text: str | None, samples: int, seq_len: int, seed: int,
          precision: str) -> None:
    """Compute importance scores of MODEL with a scorer and save them for inspection or reuse."""
    from slimkit.core.errors import OutputExistsError

    host = get_host_from(ctx)
    info = host.scorers.get(scorer)
    params = _parse_params(param_items, [scorer], single=True, kind="scorer")[scorer]
    host.config(info, params)  # a bad parameter fails before the model loads
    target = Path(out)
    if target.exists() and not overwrite:
        raise OutputExistsError(f"{target} already exists (use --overwrite to replace it)")
    model = load_model_ref(ctx, model_spec)
    calibration = None
    if info.cls.needs_calibration:
        from slimkit.core.data import TextSource, calibration_samples
        from slimkit.core.model_io import example_text

        source = TextSource(Path(calibration_text) if calibration_text else example_text())
        calibration = calibration_samples(model.tokenizer, source, n_samples=samples, seq_len=seq_len, seed=seed,
                                          precision=precision)
    with ProgressBars() as bars:
        context = host.context(progress=bars, calibration=calibration, seed=seed)
        scores = host.score(scorer, model, params=params, context=context)
    staging = target.with_name(f".{target.name}.partial")
    try:
        scores.save(staging)
        staging.replace(target)
    except BaseException as error:  # a full disk, an interrupt: no half-written file stays behind
        staging.unlink(missing_ok=True)
        from slimkit.core.failures import FileSystemError, is_os_failure, os_cause

        if is_os_failure(error):
            raise FileSystemError(f"cannot write the scores to {target}: {os_cause(error)}") from error
        raise
    table(f"{scorer} scores ({scores.granularity}) -> {target}", ["key", "numel", "mean", "min", "max"],
          [(key, s["numel"], s["mean"], s["min"], s["max"]) for key, s in scores.summary().items()])


@click.command()
@click.argument("recipe")
@click.option("--model", "-m", "model_spec", help="Also check that every step fits this model.")
@click.pass_context
def validate(ctx: click.Context, recipe: str, model_spec: str | None) -> None:
    """Check RECIPE against the installed methods (and a model) without running it."""
    from slimkit.core.recipe import load_recipe

    host = get_host_from(ctx)
    parsed = load_recipe(recipe)
    parsed.resolve(host, load_model_ref(ctx, model_spec) if model_spec else None)
    click.echo(f"{recipe}: {len(parsed.steps)} step(s), {len(parsed.evaluate)} evaluation(s): valid")


COMMANDS = (run, evaluate, validate, score)
