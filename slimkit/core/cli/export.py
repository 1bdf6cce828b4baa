"""``slimkit export``: write a model in a serving format (GGUF, compressed-tensors, ...)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import yaml

from slimkit.core.cli.runtime_options import merged_runtime, runtime_options
from slimkit.core.cli.render import ProgressBars, print_json, table
from slimkit.core.cli.run import _parse_params
from slimkit.core.cli.exports_view import model_label
from slimkit.core.cli.state import get_catalogue_from, get_host_from
from slimkit.core.errors import ConfigError
from slimkit.core.present.format import duration, human_bytes, short_id


def _params_file(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        cause = getattr(error, "strerror", None) or str(error).splitlines()[0]
        raise ConfigError(f"cannot read --params-file {path}: {cause}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--params-file {path} must hold a mapping of parameter names to values, "
                          f"not a {type(data).__name__}")
    return data


def _reference(ctx: click.Context, spec: str, no_record: bool) -> str:
    """With --no-record there is no catalogue to record into, but a catalogue name still names a
    model: it is turned into the model's folder here."""
    from slimkit.core.model_io import EXAMPLE_PREFIX

    if not no_record or spec.startswith(EXAMPLE_PREFIX) or Path(spec).expanduser().exists():
        return spec
    from slimkit.core.model_refs import model_location

    # a hub id or a path stays as it is (loading says what is wrong with it); a stored model is
    # a local, verified copy
    return model_location(spec, get_catalogue_from(ctx))


@click.command(name="export")
@click.argument("model_spec", metavar="MODEL")
@click.option("--format", "-f", "format_name", required=True, metavar="NAME",
              help="An installed exporter (slimkit methods --family exporter), e.g. gguf.")
@click.option("--out", "-o", type=click.Path(),
              help="File or folder to write (default: beside the model's folder, named after it: "
                   "m1/ -> m1.gguf, or m1-NAME/ for formats written as a folder).")
@click.option("--param", "-p", "param_items", multiple=True, metavar="FIELD=VALUE",
              help="A field of the exporter's config (repeatable; values are YAML), e.g. -p type=q4_0.")
@click.option("--params-file", type=click.Path(dir_okay=False),
              help="A YAML mapping of the exporter's parameters (--param items override it).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists (after the new export is complete).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--no-progress", is_flag=True, help="Do not draw progress bars.")
@click.option("--no-record", is_flag=True, help="Do not record the export in the catalogue.")
@runtime_options
@click.pass_context
def export(ctx: click.Context, model_spec: str, format_name: str, out: str | None, param_items: tuple[str, ...],
           params_file: str | None, overwrite: bool, as_json: bool, no_progress: bool, no_record: bool) -> None:
    """Write MODEL in a format a serving runtime loads (GGUF, compressed-tensors, ...).

    MODEL is a folder, a .gguf file, a catalogue name or id, or example:NAME. The exporter first checks everything it cannot write (each layer it refuses, and what would
    work); nothing is written unless all is well. The file appears whole or not at all, carries
    the model's content id, and is recorded in the catalogue, so `slimkit show FILE` finds the
    model even after the file was copied elsewhere.
    """
    from slimkit.core.export.run import export_model

    host = get_host_from(ctx)
    started = time.perf_counter()
    host.exporters.get(format_name)  # an unknown format fails first, listing the installed ones
    params = {**_params_file(params_file),
              **_parse_params(param_items, [format_name], single=True, kind="exporter")[format_name]}
    catalogue: Any = False if no_record else get_catalogue_from(ctx)
    with ProgressBars(enabled=not (no_progress or as_json)) as bars:
        runtime = merged_runtime(ctx)
        result = export_model(_reference(ctx, model_spec, no_record), out, format=format_name, params=params,
                              host=host, catalogue=catalogue, overwrite=overwrite, progress=bars,
                              dtype=runtime.dtype, device=runtime.device)
    model = catalogue.model(result.content_id) if result.recorded else None
    if as_json:
        print_json({**result.to_dict(), "model": model.to_dict() if model is not None else None,
                    "seconds": time.perf_counter() - started})
        return
    recorded = f"{model_label(model)} in the catalogue" if model is not None \
        else f"{short_id(result.content_id)} (not recorded: --no-record)"
    table(f"exported {model_spec} as {format_name}", ["field", "value"], [
        ("path", str(result.path)), ("size", human_bytes(result.size_bytes)), ("sha256", result.sha256),
        ("written", result.summary.description),
        ("exporter", f"{result.format} v{result.exporter_version} (plugin {result.plugin}"
                     f"{' ' + result.plugin_version if result.plugin_version else ''})"),
        ("model", recorded), ("time", duration(time.perf_counter() - started)),
    ])


COMMANDS = (export,)
