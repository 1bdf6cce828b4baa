"""``slimkit pull``: a local, verified copy of a model from the team's artifact store."""

from __future__ import annotations

import time
from pathlib import Path

import click

from slimkit.core.cli.state import get_catalogue_from


@click.command()
@click.argument("reference", metavar="MODEL")
@click.option("--to", "target", type=click.Path(file_okay=False, path_type=Path),
              help="Copy the model into this new folder (default: keep it in the local cache of the store).")
@click.pass_context
def pull(ctx: click.Context, reference: str, target: Path | None) -> None:
    """Fetch MODEL (a catalogue name or id prefix) from the artifact store, checking every file's
    sha256, and print the folder it is in.

    A model another catalogue made is found by its id prefix in the store (see --artifacts).
    Nothing half-copied is left behind: the copy appears whole or not at all.
    """
    from slimkit.core.artifact_store import ArtifactStoreError, store_of
    from slimkit.core.artifact_store.access import find_stored, store_holding
    from slimkit.core.catalogue import CatalogueError
    from slimkit.core.preflight import check_output_folder

    cat = get_catalogue_from(ctx)
    if target is not None:
        check_output_folder(target, overwrite=False)  # before anything is downloaded
    started = time.perf_counter()
    try:
        entry = cat.resolve(reference)
        model_id, label, location = entry.id, entry.label, entry.location
    except CatalogueError:
        found = find_stored(cat, reference)
        if found is None:
            raise
        model_id, label, location = found, found.partition(":")[2][:12], None
    store = (store_holding(location) if location else None) or store_of(cat)
    if not store.has(model_id):
        raise ArtifactStoreError(f"model {label} is not in the artifact store {store.url}"
                                 + (f" (its catalogue row names {location})" if location else ""))
    folder = store.open(model_id, label) if target is None else store.copy_to(model_id, target, label)
    click.echo(f"pulled {label} into {folder} ({time.perf_counter() - started:.1f} s, every file checked)")


COMMANDS = (pull,)
