"""Provenance of derived models: content ids, step records and the ``slimkit.json`` document.

``slimkit.json`` holds the whole chain from the base model to this one, so a model folder carries
its lineage even outside any catalogue.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from datetime import datetime, timezone
from typing import Any, Mapping

import torch
from torch import nn

from slimkit.core.catalogue.entities import StepEntry

PROVENANCE_FORMAT = 1


def content_id(model: nn.Module) -> str:
    """``sha256:`` hash of the weights (names, dtypes, shapes and bytes, in name order)."""
    digest = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        add_to_content_id(digest, name, state[name])
    return "sha256:" + digest.hexdigest()


def add_to_content_id(digest: Any, name: str, tensor: torch.Tensor) -> None:
    """Feed one state-dict entry to a content id's hash (see :func:`content_id`: entries go in
    name order), so that an id can be computed one tensor at a time from files as well."""
    tensor = tensor.detach().contiguous().cpu()
    digest.update(name.encode())
    digest.update(str(tensor.dtype).encode())
    digest.update(str(tuple(tensor.shape)).encode())
    if tensor.numel():  # hashlib reads the buffer in place: no copy of the bytes
        digest.update(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))  # type: ignore[arg-type]


def runtime_versions() -> dict[str, str]:
    import transformers

    from slimkit.core.host import slimkit_version

    return {
        "slimkit": slimkit_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def step_key(
    parents: list[dict[str, str]],
    identity: Mapping[str, Any],
    calibration_fingerprint: str | None,
    seed: int,
) -> str:
    """The id of a step, known before it runs: the same methods (``identity``: the compressor's
    config, plugin and distribution version, and every method it runs inside, see
    :func:`slimkit.core.identity.step_identity`), data and seed applied to the same parent(s)
    always get the same id, so the catalogue can recognise a repeat; anything else, a new id."""
    payload = json.dumps(
        {"parents": parents, "methods": identity, "data": calibration_fingerprint, "seed": seed},
        sort_keys=True, separators=(",", ":"),
    )
    return "sha256:" + hashlib.sha256(payload.encode()).hexdigest()


#: The runner's name for the one step type (:class:`~slimkit.core.catalogue.entities.StepEntry`).
StepRecord = StepEntry


def build_provenance(
    *,
    model: nn.Module,
    child_id: str,
    base: Mapping[str, Any],
    steps: list[StepEntry],
    parent: Mapping[str, Any] | None,
    evaluations: list[dict[str, Any]] | None = None,
    recipe: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``slimkit.json`` document of a derived model.

    ``parent`` is the parent's own provenance (if it was itself derived): its steps come first so
    the document always holds the full chain back to the base.
    """
    earlier = list(parent.get("steps", [])) if parent else []
    return {
        "format": PROVENANCE_FORMAT,
        "content_id": child_id,
        "architecture": type(model).__name__,
        "created": now_iso(),
        "base": dict(parent.get("base", base)) if parent else dict(base),
        "steps": earlier + [step.to_json() for step in steps],
        "evaluations": list(evaluations or []),
        "recipe": dict(recipe) if recipe else None,
        "versions": runtime_versions(),
    }


class Stopwatch:
    """Wall time of a block of work: ``with Stopwatch() as sw: ...; sw.seconds``."""

    def __enter__(self) -> "Stopwatch":
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
