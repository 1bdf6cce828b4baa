"""What the catalogue returns: frozen plain objects, never ORM rows.

They display themselves in notebooks through the leaf renderers of :mod:`slimkit.core.present`,
which import nothing of the catalogue back (see that package for why this arrow points down).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from slimkit.core.present import html
from slimkit.core.present.format import short_id as _short_id


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


@dataclass(frozen=True)
class ModelEntry:
    """A model in the catalogue, identified by the hash of its weights."""

    id: str
    architecture: str
    created: datetime
    name: str | None = None
    params: int | None = None
    size_bytes: int | None = None
    location: str | None = None
    source: str | None = None

    @property
    def short_id(self) -> str:
        return _short_id(self.id)

    @property
    def label(self) -> str:
        return self.name or self.short_id

    def to_dict(self) -> dict[str, Any]:
        return {key: _jsonable(value) for key, value in asdict(self).items()}

    def _repr_html_(self) -> str:  # notebooks: a table of the model's facts
        return html.model_html(self)

    def _repr_json_(self) -> dict[str, Any]:
        return self.to_dict()


@dataclass(frozen=True)
class StepEntry:
    """A lineage edge: ``parents`` (model id, role) -> ``child_id`` through one method."""

    id: str
    child_id: str | None
    parents: tuple[tuple[str, str], ...]
    method: str
    method_version: int
    family: str
    config: dict[str, Any]
    plugin: str
    plugin_version: str | None
    versions: dict[str, str]
    seed: int
    status: str
    created: datetime
    calibration: dict[str, Any] | None = None
    calibration_fingerprint: str | None = None
    wall_time_s: float | None = None
    peak_rss_bytes: int | None = None
    summary: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None

    @property
    def input_id(self) -> str | None:
        """The model this step changed (its first ``input`` parent)."""
        return next((model for model, role in self.parents if role == "input"), None)

    def to_dict(self) -> dict[str, Any]:
        data = {key: _jsonable(value) for key, value in asdict(self).items()}
        data["parents"] = [{"model_id": m, "role": r} for m, r in self.parents]
        return data

    def _repr_html_(self) -> str:  # notebooks: method, parents, key params, full config
        return html.step_html(self)

    def _repr_json_(self) -> dict[str, Any]:
        return self.to_dict()


@dataclass(frozen=True)
class EvaluationEntry:
    """One metric of one model."""

    model_id: str
    evaluator: str
    evaluator_version: int
    metric: str
    value: float
    config: dict[str, Any]
    created: datetime
    dataset_fingerprint: str | None = None
    run_id: str | None = None

    @property
    def key(self) -> str:
        return f"{self.evaluator}.{self.metric}"

    def to_dict(self) -> dict[str, Any]:
        return {key: _jsonable(value) for key, value in asdict(self).items()}

    def _repr_html_(self) -> str:  # notebooks: the metric, its value and settings
        return html.evaluation_html(self)

    def _repr_json_(self) -> dict[str, Any]:
        return self.to_dict()


@dataclass(frozen=True)
class RunEntry:
    """One invocation: a recipe run or an evaluation."""

    id: str
    kind: str
    status: str
    host: str
    started: datetime
    pid: int | None = None
    recipe_name: str | None = None
    recipe_text: str | None = None
    error: str | None = None
    ended: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {key: _jsonable(value) for key, value in asdict(self).items()}
