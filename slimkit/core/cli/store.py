"""``slimkit pull`` and ``slimkit publish``: a model from and into the team's artifact store."""

from __future__ import annotations

import shutil
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


@click.command()
@click.argument("reference", metavar="MODEL")
@click.pass_context
def publish(ctx: click.Context, reference: str) -> None:
    """Copy MODEL (a catalogued model saved with --out) into the artifact store, so that every
    machine of the team opens it by name or id; its own folder stays as it is.

    Runs without --out publish their result themselves.
    """
    import json

    from slimkit.core.artifact_store import ArtifactStoreError, catalogue_token, store_of
    from slimkit.core.artifact_store.access import publish_result
    from slimkit.core.atomic import write_staged
    from slimkit.core.catalogue.artifacts import new_artifact_path
    from slimkit.core.model_io import PROVENANCE_FILE

    cat = get_catalogue_from(ctx)
    entry = cat.resolve(reference)
    store = store_of(cat)
    store.check_writable()  # before copying anything
    if store.has(entry.id):
        store.add_ref(entry.id, catalogue_token(cat))
        click.echo(f"{entry.label} is in the artifact store already: {store.location(entry.id)}")
        return
    folder = Path(entry.location) if entry.location else None
    if folder is None or not (folder / "config.json").is_file():
        raise ArtifactStoreError(f"cannot publish model {entry.label}: its folder ({entry.location}) is not here")
    recorded = folder / PROVENANCE_FILE
    if recorded.is_file() and json.loads(recorded.read_text()).get("content_id") not in (None, entry.id):
        raise ArtifactStoreError(f"cannot publish model {entry.label}: {folder} holds another model now")
    staging = new_artifact_path(cat, entry.name or entry.short_id)
    write_staged(staging, "folder", lambda into: shutil.copytree(folder, into, dirs_exist_ok=True),
                 what="cannot copy the model into the artifact store at")
    _, location = publish_result(cat, staging, entry.id, entry.name)
    click.echo(f"published {entry.label} to {location}")


COMMANDS = (pull, publish)
