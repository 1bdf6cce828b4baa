"""The catalogue as a search's memory: every recorded chain of steps from the input model that is
a point of the space, with the metrics recorded for its result.

A recorded chain matches a point when each of its steps is exactly the step the point's recipe
would run (method, plugin config with every default, the methods it runs inside, seed, and
calibration data): whatever made it (an earlier search, a sweep, a hand-written recipe).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

from slimkit.core.errors import SlimkitError
from slimkit.core.search.space import Point, Space
from slimkit.core.search.trials import point_key

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.catalogue import Catalogue
    from slimkit.core.catalogue.entities import StepEntry
    from slimkit.core.host import Host


@dataclass(frozen=True)
class Recorded:
    point: Point
    model_id: str  # the chain's result
    location: str | None
    steps: int


def _chains(cat: "Catalogue", model_id: str, depth: int) -> Iterator[list["StepEntry"]]:
    """Every chain of finished steps (input role) of length 1..``depth`` starting at ``model_id``."""
    if depth == 0:
        return
    for step in cat.steps_from(model_id):
        if step.status != "done" or step.child_id is None or step.input_id != model_id:
            continue
        yield [step]
        for rest in _chains(cat, step.child_id, depth - 1):
            yield [step, *rest]


def recorded_points(cat: "Catalogue", host: "Host", space: Space, base_id: str,
                    calibration: dict[str, Any] | None) -> dict[str, Recorded]:
    """The points of ``space`` the catalogue holds a result for, by :func:`point_key`."""
    depth = len(space.steps)
    structures = space.structures()
    found: dict[str, Recorded] = {}
    for chain in _chains(cat, base_id, depth):
        methods = [s.method for s in chain]
        for structure in structures:
            if [m for _, m in structure] != methods:
                continue
            point = space.point_of(structure, [s.config.get("data", {}) for s in chain])
            if point is None or not _same_steps(host, space, point, chain, calibration):
                continue
            last = chain[-1]
            assert last.child_id is not None
            location = cat.model(last.child_id).location
            found.setdefault(point_key(point), Recorded(point, last.child_id, location, len(chain)))
    return found


def _same_steps(host: "Host", space: Space, point: Point, chain: list["StepEntry"],
                calibration: dict[str, Any] | None) -> bool:
    try:
        planned = space.recipe(point).resolve(host).planned()
    except SlimkitError:
        return False
    for plan, entry in zip(planned, chain):
        uses = tuple(use.to_json() for use in plan.uses)
        if plan.serial != entry.config or plan.seed != entry.seed or tuple(entry.uses) != uses:
            return False
        if entry.calibration != calibration:  # (the step key covers the data too)
            return False
    return True
