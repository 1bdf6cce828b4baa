"""Which points of a space can run: refused by a constraint on the space, by the methods' own
validation, or by the input model (a method that does not fit its architecture); and, when none
can, which of these refuses them all."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from slimkit.core.errors import SlimkitError
from slimkit.core.search.goals import Goals
from slimkit.core.search.space import Point, Space
from slimkit.core.search.spec import SearchError

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.host import Host
    from slimkit.core.model_io import LoadedModel


def valid_points(space: Space, goals: Goals, host: "Host", points: list[Point]) -> tuple[list[Point], list[tuple[Point, str]]]:
    valid, refused = [], []
    checked: dict[str, str | None] = {}  # a recipe's validity, by its text
    for point in points:
        broken = goals.space_allows(point)
        if broken is not None:
            refused.append((point, f"constraint {broken.text!r}"))
            continue
        try:
            recipe = space.recipe(point)
        except SearchError as error:
            refused.append((point, str(error)))
            continue
        text = recipe.to_yaml()
        if text not in checked:
            try:
                recipe.resolve(host)
                checked[text] = None
            except SlimkitError as error:
                checked[text] = str(error)
        if checked[text] is None:
            valid.append(point)
        else:
            refused.append((point, str(checked[text])))
    return valid, refused


def why_empty(space: Space, goals: Goals, refused: list[tuple[Point, str]]) -> str:
    total = len(refused)
    counts: dict[str, int] = {}
    for _, reason in refused:
        counts[reason] = counts.get(reason, 0) + 1
    parts = []
    for reason, count in sorted(counts.items(), key=lambda kv: -kv[1]):
        text = reason
        if reason.startswith("constraint "):
            constraint = next(c for c in goals.constraints if f"constraint {c.text!r}" == reason)
            dim = space.dimension(constraint.key)
            text += f" excludes {count} of {total}" + (f" ({dim.name} takes {dim.describe()})" if dim else "")
        else:
            text = f"{count} of {total} refused: {reason}"
        parts.append(text)
    return "the search space has no valid combination: " + "; ".join(parts)


class ModelCheck:
    """Each recipe's checks against the input model (architecture fit, a group size that divides
    the layers...), loaded once; results kept by recipe."""

    def __init__(self, host: "Host", load: Callable[[], "LoadedModel"]) -> None:
        self.host, self._load = host, load
        self._model: "LoadedModel | None" = None
        self._seen: dict[str, str | None] = {}
        self._calibration: dict[str, Any] = {}  # drawn once per calibration section, not per recipe

    def problem(self, space: Space, point: Point) -> str | None:
        try:
            recipe = space.recipe(point)
        except SearchError as error:
            return str(error)
        text = recipe.to_yaml()
        if text not in self._seen:
            if self._model is None:
                self._model = self._load()
            try:
                validated = recipe.resolve(self.host)
                section = recipe.calibration.model_dump_json() if recipe.calibration else ""
                if section not in self._calibration:
                    self._calibration[section] = recipe.calibration_data(self._model)
                calibration = self._calibration[section]
                problems = validated.check_model(self.host, self._model, calibration)
            except SlimkitError as error:
                problems = [str(error)]
            self._seen[text] = "; ".join(problems) if problems else None
        return self._seen[text]

    def release(self) -> None:
        self._model = None

    def split(self, space: Space, points: list[Point]) -> tuple[list[Point], list[tuple[Point, str]]]:
        valid, refused = [], []
        for point in points:
            problem = self.problem(space, point)
            if problem is None:
                valid.append(point)
            else:
                refused.append((point, problem))
        return valid, refused
