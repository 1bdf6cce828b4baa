"""Recording into a catalogue from runs and evaluations: which catalogue, and the input model."""

from __future__ import annotations

import contextlib
import copy
from typing import TYPE_CHECKING, Any, Iterator, Literal

from slimkit.core.model_io import LoadedModel, disk_bytes

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.catalogue import Catalogue


def open_catalogue(catalogue: "Catalogue | str | None | Literal[False]") -> "Catalogue | None":
    """``False``: no catalogue; ``None``: the default one; a URL or path: that one."""
    if catalogue is False:
        return None
    from slimkit.core.catalogue import Catalogue

    if isinstance(catalogue, Catalogue):
        return catalogue
    return Catalogue(catalogue)


def describe_input(loaded: LoadedModel, model_id: str, evaluations: list[dict[str, Any]]) -> dict[str, Any]:
    """What :func:`record_input` writes, taken now: the model may change in place afterwards (a
    run records its inputs only once it has succeeded, so a failed run leaves no trace)."""
    derived = bool(loaded.provenance and loaded.provenance.get("content_id") == model_id)
    return {"model_id": model_id, "architecture": loaded.architecture, "source": loaded.source,
            "location": str(loaded.path.resolve()) if loaded.path is not None else None,
            "params": sum(p.numel() for p in loaded.model.parameters()), "size_bytes": disk_bytes(loaded.path),
            "provenance": copy.deepcopy(loaded.provenance) if derived else None, "evaluations": evaluations}


def record_input(cat: "Catalogue", described: dict[str, Any], run_id: str | None) -> None:
    """Make sure an input model (and, if it was derived, its chain) is in the catalogue, with the
    evaluations taken of it (``described`` comes from :func:`describe_input`)."""
    d = described
    with cat.session() as session, session.begin():  # the model and its metrics, or nothing
        if d["provenance"] is not None:
            cat.record_provenance(d["provenance"], location=d["location"], params=d["params"],
                                  size_bytes=d["size_bytes"], run_id=run_id, session=session)
        else:
            cat.record_model(d["model_id"], d["architecture"], params=d["params"], size_bytes=d["size_bytes"],
                             location=d["location"], source=d["source"], session=session)
        for record in d["evaluations"]:
            cat.record_evaluations(d["model_id"], record["evaluator"], record["version"], record["metrics"],
                                   config=record["config"], dataset_fingerprint=record["dataset_fingerprint"],
                                   run_id=run_id, session=session)


@contextlib.contextmanager
def recorded_run(
    cat: "Catalogue | None", kind: str, recipe_name: str | None = None, recipe_text: str | None = None
) -> Iterator[str | None]:
    """A run row around a piece of work: ``running`` while it runs, then ``done``, or ``failed``
    with the error (re-raised). Without a catalogue it yields ``None`` and records nothing."""
    if cat is None:
        yield None
        return
    run_id = cat.start_run(kind, recipe_name, recipe_text)
    try:
        yield run_id
    except BaseException as error:
        cat.finish_run(run_id, "failed", f"{type(error).__name__}: {error}")
        raise
    cat.finish_run(run_id, "done")
