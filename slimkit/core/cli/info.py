"""``slimkit plugins`` and ``slimkit methods``: what is installed."""

from __future__ import annotations

import click

from slimkit.core.cli.render import print_json, table
from slimkit.core.cli.state import get_host_from
from slimkit.core.config import config_schema
from slimkit.core.host import FAMILY_HOOKS


@click.command()
@click.option("--all", "show_all", is_flag=True, help="Include the bundled plugins.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def plugins(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """List installed plugins (and, with --all, the bundled ones)."""
    host = get_host_from(ctx)
    infos = [info for info in host.plugin_infos() if show_all or info.source != "bundled"]
    if as_json:
        print_json(
            [{"name": i.name, "version": i.version, "hooks": list(i.hooks), "source": i.source,
              "distribution": i.distribution} for i in infos]
        )
    else:
        table(None, ["plugin", "version", "source", "hooks"],
              [(i.name, i.version, i.source, ", ".join(i.hooks)) for i in infos])
        if not infos and not show_all:
            click.echo("No third-party plugins installed (slimkit plugins --all lists the bundled ones).")
    for problem in host.problems:
        click.echo(f"Warning: {problem}", err=True)


@click.command()
@click.argument("name", required=False)
@click.option("--family", type=click.Choice(list(FAMILY_HOOKS)), help="Only this family.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with each config's JSON schema).")
@click.pass_context
def methods(ctx: click.Context, name: str | None, family: str | None, as_json: bool) -> None:
    """List installed methods, or show one method's parameters."""
    host = get_host_from(ctx)
    if name:
        found = [host.find_method(name, [family] if family else None)]  # type: ignore[list-item]
    else:
        found = host.methods(family)  # type: ignore[arg-type]
    records = []
    for info in found:
        record = {"name": info.name, "family": info.family, "version": info.version,
                  "plugin": info.plugin, "plugin_version": info.plugin_version,
                  "description": info.description}
        if info.family != "architecture":
            record["config_schema"] = config_schema(info.cls.Config)
            record["needs_calibration"] = bool(getattr(info.cls, "needs_calibration", False))
        else:
            record["model_types"] = list(getattr(info.cls, "model_types", ()))
        records.append(record)
    if as_json:
        print_json(records[0] if name else records)
        return
    if not name:
        table(None, ["method", "family", "version", "plugin", "description"],
              [(r["name"], r["family"], r["version"], r["plugin"], r["description"]) for r in records])
        return
    record = records[0]
    click.echo(f"{record['name']} ({record['family']} v{record['version']}, plugin {record['plugin']})")
    click.echo(f"  {record['description']}")
    properties = record.get("config_schema", {}).get("properties", {})
    if properties:
        table("parameters", ["name", "type", "default", "description"],
              [(key, _type(spec), spec.get("default"), spec.get("description", ""))
               for key, spec in properties.items()])


def _type(spec: dict) -> str:
    if "enum" in spec:
        return " | ".join(map(str, spec["enum"]))
    if "anyOf" in spec:
        return " | ".join(_type(alt) for alt in spec["anyOf"])
    text = spec.get("type", "any")
    bounds = [f"{op}{spec[key]}" for key, op in
              (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"))
              if key in spec]
    return f"{text} {' '.join(bounds)}".strip()


COMMANDS = (plugins, methods)
