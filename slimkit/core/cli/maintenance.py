"""``slimkit reproduce`` and ``slimkit gc``: check a chain replays exactly; clean artifacts."""

from __future__ import annotations

import click

from slimkit.core.cli.render import ProgressBars, print_json, table
from slimkit.core.cli.state import get_catalogue_from, get_host_from
from slimkit.core.present.format import duration, short_id


@click.command()
@click.argument("reference", metavar="MODEL")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def reproduce(ctx: click.Context, reference: str, as_json: bool) -> None:
    """Re-run MODEL's chain from its base and check the weights hash to the same ids."""
    from slimkit.core.reproduce import ReproduceError, reproduce as replay

    cat = get_catalogue_from(ctx)
    with ProgressBars(enabled=not as_json) as bars:
        report = replay(cat, reference, host=get_host_from(ctx), progress=bars)
    if as_json:
        print_json({"model_id": report.model_id, "base_id": report.base_id, "identical": report.identical,
                    "steps": [{"method": s.method, "expected": s.expected, "got": s.got, "identical": s.identical,
                               "seconds": s.seconds} for s in report.steps]})
    else:
        table(f"reproducing {short_id(report.model_id)} from {short_id(report.base_id)}",
              ["step", "method", "expected", "got", "same", "time"],
              [(i, s.method, short_id(s.expected), short_id(s.got), "yes" if s.identical else "NO", duration(s.seconds))
               for i, s in enumerate(report.steps, start=1)])
    if not report.identical:
        bad = next((i for i, s in enumerate(report.steps, start=1) if not s.identical), len(report.steps))
        raise ReproduceError(f"reproduction diverged at step {bad} ({report.steps[bad - 1].method})")
    if not as_json:
        click.echo(f"reproduced: {len(report.steps)} step(s), identical weights")


@click.command()
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.option("--grace", "grace_s", type=click.FloatRange(min=0), default=3600.0, show_default=True,
              metavar="SECONDS", help="Leave stored models and incomplete uploads younger than this alone.")
@click.pass_context
def gc(ctx: click.Context, dry_run: bool, grace_s: float) -> None:
    """Remove artifact folders no model refers to, and stale half-written folders.

    In the artifact store, a model stays while any catalogue sharing the store refers to it
    (each one leaves a marker there); this catalogue's markers are brought up to date first.
    """
    from slimkit.core.artifact_store.gc import collect_store_garbage
    from slimkit.core.catalogue.artifacts import artifact_dir, collect_garbage

    cat = get_catalogue_from(ctx)
    report = collect_garbage(cat, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for path in report.removed:
        click.echo(f"{verb} {path}")
    click.echo(f"{verb} {len(report.removed)} folder(s) in {artifact_dir(cat)}; kept {report.kept} referenced")
    stored = collect_store_garbage(cat, grace_s=grace_s, dry_run=dry_run)
    for hex_id in stored.removed:
        click.echo(f"{verb} model {hex_id[:12]} from the artifact store (no catalogue refers to it)")
    for name in stored.incomplete:
        click.echo(f"{verb} {name} from the artifact store (incomplete or left over)")
    click.echo(f"{verb} {len(stored.removed)} model(s) from the artifact store {stored.store}; kept {stored.kept} "
               f"referenced, {stored.young} unreferenced but younger than {grace_s:g} s")
    if report.skipped_staging:
        click.echo("left half-written folders alone: a run is in progress", err=True)
    for model_id, location in report.missing:
        click.echo(f"model {short_id(model_id)} is recorded at {location}, which no longer exists", err=True)


COMMANDS = (reproduce, gc)
