"""``slimkit plugins`` and ``slimkit methods``: what is installed."""

from __future__ import annotations

import click

from slimkit.core.cli.render import print_json, table
from slimkit.core.cli.state import get_host_from
from slimkit.core.config import config_schema
from slimkit.core.host import FAMILY_HOOKS, Host


@click.command()
@click.option("--all", "show_all", is_flag=True, help="Include the bundled plugins.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def plugins(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """List installed plugins (and, with --all, the bundled ones) and how each fared.

    STATUS is ok, partly loaded (a hook raised or a method was refused), broken (failed to import,
    failed validation, or its name was taken), blocked (SLIMKIT_BLOCK_PLUGINS), not selected
    (SLIMKIT_LOAD_PLUGINS does not name it) or not installed (a name in one of those variables
    that matches no installed plugin). Each problem is printed below the table (in the JSON: errors).
    """
    host = get_host_from(ctx)
    infos = [info for info in host.plugin_infos(unloaded=True) if show_all or info.source != "bundled"]
    if as_json:
        print_json(
            [{"name": i.name, "version": i.version, "hooks": list(i.hooks), "source": i.source,
              "distribution": i.distribution, "status": i.status, "errors": list(i.errors)} for i in infos]
        )
    else:
        table(None, ["plugin", "version", "distribution", "source", "status", "hooks"],
              [(i.name, i.version, i.distribution, i.source, i.status, ", ".join(i.hooks)) for i in infos])
        if not infos and not show_all:
            click.echo("No third-party plugins installed (slimkit plugins --all lists the bundled ones).")
        for error in dict.fromkeys(error for i in infos for error in i.errors):  # one line per problem
            click.echo(f"Problem: {error}")
    # Problems of plugins not listed (bundled ones without --all) still deserve a line.
    listed = {error for i in infos for error in i.errors}
    for problem in host.problems:
        if str(problem) not in listed:
            click.echo(f"Warning: {problem}", err=True)


def load_warnings(host: Host) -> list[str]:
    """One-line warnings for commands other than ``slimkit plugins``: names in SLIMKIT_LOAD_PLUGINS or
    SLIMKIT_BLOCK_PLUGINS that match nothing installed, and plugins that did not load cleanly."""
    infos = host.plugin_infos(unloaded=True)
    lines = list(dict.fromkeys(f"Warning: {i.errors[0]}" for i in infos if i.status == "not installed"))
    troubled = [f"{i.name} ({i.status})" for i in infos if i.status in ("broken", "partly loaded")]
    if troubled:
        lines.append(f"Warning: plugins that did not load cleanly: {', '.join(troubled)}; "
                     "`slimkit plugins` says why")
    return lines


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
