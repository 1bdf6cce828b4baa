"""``slimkit models|show|lineage|descendants|diff|pareto|delete``: asking the lineage catalogue.

MODEL is a name, a full id or a unique id prefix; an unknown or ambiguous one is a one-line error
listing the candidates. Only ``delete`` writes, and only after saying what would go.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from slimkit.core.catalogue import queries
from slimkit.core.catalogue.entities import ModelEntry, StepEntry
from slimkit.core.catalogue.migrate import CatalogueError
from slimkit.core.cli.render import console, print_json, table
from slimkit.core.cli.state import get_catalogue_from, get_host_from
from slimkit.core.present.format import (
    change,
    config_params,
    duration,
    human_bytes,
    key_params,
    metric_value,
    short_id,
    step_label,
)


def _made_by(cat: Any, model: ModelEntry) -> str:
    steps = [s for s in cat.steps_into(model.id) if s.input_id != model.id]  # not no-op self-loops
    return steps[0].method if steps else "(base)"


def _step_cell(step: StepEntry) -> str:
    return step_label(step.method, key_params(step))


@click.command()
@click.option("--method", help="Only models a step of this method produced.")
@click.option("--architecture", help="Only models of this architecture, e.g. LlamaForCausalLM.")
@click.option("--where", "conditions", multiple=True, metavar="EXPR",
              help="Metric condition, repeatable (all must hold): perplexity<30, size.disk_bytes<=2e6, sparsity>0.4.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def models(ctx: click.Context, method: str | None, architecture: str | None, conditions: tuple[str, ...],
           as_json: bool) -> None:
    """List the models in the catalogue, oldest first."""
    cat = get_catalogue_from(ctx)
    found = queries.filter_models(cat, method=method, architecture=architecture, where=list(conditions))
    known = queries.metric_keys(cat) if conditions else set()
    keys = [queries.parse_condition(c, known).key for c in conditions]
    keys = [k for i, k in enumerate(keys) if k not in keys[:i] and k not in queries.COLUMNS]
    if as_json:
        print_json([{**m.to_dict(), "made_by": _made_by(cat, m),
                     "metrics": {k: cat.metrics(m.id).get(k) for k in keys}} for m in found])
        return
    rows = []
    for m in found:
        metrics = cat.metrics(m.id)
        rows.append([m.short_id, m.name, _made_by(cat, m), m.architecture, m.params, human_bytes(m.size_bytes),
                     m.created.strftime("%Y-%m-%d %H:%M"), *[metric_value(k, metrics.get(k)) for k in keys]])
    table(f"{len(found)} model(s)", ["id", "name", "made by", "architecture", "params", "size", "created", *keys], rows)


@click.command()
@click.argument("reference", metavar="MODEL")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def show(ctx: click.Context, reference: str, as_json: bool) -> None:
    """Show MODEL: its row, the step that produced it, its evaluations, where it is stored and its
    exports. MODEL may also be an exported file or folder (even a copy): it is identified by the
    model id it carries, or by its sha256, and shown with the model and lineage it came from."""
    from slimkit.core.cli import exports_view as view

    cat = get_catalogue_from(ctx)
    path = view.file_reference(cat, reference)
    found = view.trace(get_host_from(ctx), cat, path) if path is not None else None
    if found is not None and not as_json:
        view.print_trace(found)
    if found is not None and found.model is None:
        if as_json:
            print_json({"file": found.to_dict(), "model": None})
        return
    model = found.model if found is not None else (view.model_at(cat, reference) or cat.resolve(reference))
    assert model is not None
    steps = cat.steps_into(model.id)
    evaluations = cat.evaluations(model.id)
    exports = cat.exports(model.id)
    derived = [s.child_id for s in cat.steps_from(model.id) if s.child_id and s.child_id != model.id]
    on_disk = bool(model.location) and Path(model.location or "").exists()
    if as_json:
        print_json({**({"file": found.to_dict()} if found is not None else {}),
                    "model": model.to_dict(), "location_exists": on_disk,
                    "produced_by": [s.to_dict() for s in steps], "evaluations": [e.to_dict() for e in evaluations],
                    "exports": view.exports_json(exports), "derived": sorted(set(derived)),
                    **({"lineage": queries.lineage_json(cat, model.id)} if found is not None else {})})
        return
    from slimkit.core.catalogue.artifacts import is_remote_url

    state = "in a remote artifact store" if model.location and is_remote_url(model.location) else \
        "present" if on_disk else "missing"
    where = f"{model.location} ({state})" if model.location else "-"
    table(f"model {model.label}", ["field", "value"], [
        ("id", model.id), ("name", model.name), ("architecture", model.architecture), ("params", model.params),
        ("size", human_bytes(model.size_bytes)), ("location", where), ("source", model.source),
        ("created", model.created.isoformat(timespec="seconds")), ("derived models", len(set(derived))),
    ])
    if found is not None and steps:  # an exported file: the whole chain it came from
        _lineage_table(cat, model)
    elif steps:
        table("produced by", ["step", "method", "config", "seed", "parents", "wall time", "status"], [
            (short_id(s.id), s.method, key_params(s, limit=6), s.seed,
             ", ".join(f"{short_id(m)} ({r})" for m, r in s.parents), duration(s.wall_time_s), s.status)
            for s in steps
        ])
    else:
        click.echo("produced by: nothing recorded (a base model)")
    if evaluations:
        table("evaluations", ["metric", "value", "evaluator version", "time"],
              [(e.key, metric_value(e.key, e.value), e.evaluator_version, e.created.isoformat(timespec="seconds"))
               for e in evaluations])
    view.print_exports(exports)


def _lineage_table(cat: Any, model: ModelEntry) -> None:
    chain, steps = queries.lineage_models(cat, model.id)
    labels = {m.id: m.label for m in chain}
    base = chain[0].label + (f", {chain[0].source}" if chain[0].source else "")
    table(f"lineage of {model.label} (base {base})",
          ["#", "method", "config", "seed", "parent", "child", "wall time"],
          [(i, s.method, key_params(s, limit=6), s.seed, labels.get(s.input_id or "", "?"),
            labels.get(s.child_id or "", "?"), duration(s.wall_time_s)) for i, s in enumerate(steps, start=1)])


@click.command()
@click.argument("reference", metavar="MODEL")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "mermaid", "dot"]), default="table",
              show_default=True, help="Output format (mermaid and dot draw a graph).")
@click.pass_context
def lineage(ctx: click.Context, reference: str, fmt: str) -> None:
    """The chain of steps from the base model to MODEL, oldest first."""
    cat = get_catalogue_from(ctx)
    model = cat.resolve(reference)
    if fmt == "json":
        print_json(queries.lineage_json(cat, model.id))
        return
    if fmt in ("mermaid", "dot"):
        from slimkit.core.present.lineage import lineage_dot, lineage_mermaid

        click.echo((lineage_mermaid if fmt == "mermaid" else lineage_dot)(cat, model.id), nl=False)
        return
    _lineage_table(cat, model)


def _tree_lines(node: queries.Node, depth: int = 0) -> list[str]:
    how = f"  <- {_step_cell(node.step)}" if node.step else ""
    lines = [f"{'    ' * depth}{node.model.label}{how}"]
    for child in node.children:
        lines += _tree_lines(child, depth + 1)
    return lines


@click.command()
@click.argument("reference", metavar="MODEL")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def descendants(ctx: click.Context, reference: str, as_json: bool) -> None:
    """The tree of models derived from MODEL, each with the step that made it."""
    cat = get_catalogue_from(ctx)
    root = queries.descendants(cat, reference)
    if as_json:
        print_json(root.to_dict())
        return
    from rich.markup import escape
    from rich.tree import Tree

    def grow(tree: Tree, node: queries.Node) -> None:
        for child in node.children:
            how = f" [dim]<- {escape(_step_cell(child.step))}[/dim]" if child.step else ""
            grow(tree.add(f"[bold]{escape(child.model.label)}[/bold]{how}"), child)

    tree = Tree(f"[bold]{escape(root.model.label)}[/bold]")
    grow(tree, root)
    console().print(tree)


@click.command()
@click.argument("a", metavar="A")
@click.argument("b", metavar="B")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def diff(ctx: click.Context, a: str, b: str, as_json: bool) -> None:
    """Models A and B side by side: the steps that made them and their latest metrics."""
    cat = get_catalogue_from(ctx)
    result = queries.diff(cat, a, b)
    if as_json:
        print_json(result)
        return
    label_a = result["a"]["name"] or short_id(result["a"]["id"])
    label_b = result["b"]["name"] or short_id(result["b"]["id"])

    def cell(step: dict[str, Any] | None) -> str:
        if step is None:
            return "-"
        return f"{step_label(step['method'], config_params(step['config'], limit=None))} seed={step['seed']}"

    base = "the same base" if result["same_base"] else "different bases"
    table(f"steps ({base})", ["#", label_a, label_b, "same step"],
          [(row["index"], cell(row["a"]), cell(row["b"]), "yes" if row["same"] else "") for row in result["steps"]])
    table("metrics", ["metric", label_a, label_b, "change"],
          [(r["metric"], metric_value(r["metric"], r["a"]), metric_value(r["metric"], r["b"]),
            change(r["a"], r["b"]) + ("" if r["same_settings"] is not False else " *"))
           for r in result["metrics"]])
    if any(r["same_settings"] is False for r in result["metrics"]):
        click.echo("* measured with different settings or data for A and B: not directly comparable")


@click.command()
@click.option("--x", "x", default="size", show_default=True, help="Metric on x: evaluator.metric, metric, params, size.")
@click.option("--y", "y", default="perplexity", show_default=True, help="Metric on y (same choices as --x).")
@click.option("--maximize-x", is_flag=True, help="Larger x is better (default: smaller).")
@click.option("--maximize-y", is_flag=True, help="Larger y is better (default: smaller).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def pareto(ctx: click.Context, x: str, y: str, maximize_x: bool, maximize_y: bool, as_json: bool) -> None:
    """Models that are best trade-offs between two metrics (the Pareto front), marked with *."""
    cat = get_catalogue_from(ctx)
    front, points = queries.pareto(cat, x, y, minimize_x=not maximize_x, minimize_y=not maximize_y)
    keys = queries.metric_keys(cat)
    kx, ky = queries.resolve_key(x, keys), queries.resolve_key(y, keys)
    on_front = {p.model.id for p in front}
    if as_json:
        print_json({"x": kx, "y": ky, "minimize_x": not maximize_x, "minimize_y": not maximize_y,
                    "front": [p.to_dict() for p in front],
                    "points": [{**p.to_dict(), "front": p.model.id in on_front} for p in points]})
        return
    table(f"{len(front)} of {len(points)} model(s) on the front ({kx} {'max' if maximize_x else 'min'}, "
          f"{ky} {'max' if maximize_y else 'min'})", ["front", "id", "name", kx, ky],
          [("*" if p.model.id in on_front else "", p.model.short_id, p.model.name, metric_value(kx, p.x),
            metric_value(ky, p.y))
           for p in points])


@click.command()
@click.argument("reference", metavar="MODEL")
@click.option("--cascade", is_flag=True, help="Also delete every model derived from MODEL.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def delete(ctx: click.Context, reference: str, cascade: bool, yes: bool) -> None:
    """Remove MODEL (and with --cascade what was derived from it) from the catalogue.

    Model folders on disk are left alone."""
    cat = get_catalogue_from(ctx)
    root = queries.descendants(cat, reference)
    doomed = [node.model for node in root.walk()]
    listed = ", ".join(m.label for m in doomed[1:11]) + (" ..." if len(doomed) > 11 else "")
    if len(doomed) > 1 and not cascade:
        raise CatalogueError(f"model {root.model.label} has {len(doomed) - 1} derived model(s) ({listed}); "
                             "use --cascade to delete them too")
    click.echo(f"would delete {len(doomed)} model(s): {', '.join(m.label for m in doomed)}")
    if not yes:
        click.confirm("Delete them from the catalogue?", abort=True)
    deleted = cat.delete(root.model.id, cascade=cascade)
    click.echo(f"deleted {len(deleted)} model(s)")


COMMANDS = (models, show, lineage, descendants, diff, pareto, delete)
