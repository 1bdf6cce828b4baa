"""What the catalogue returns: frozen plain objects, never ORM rows.

They display themselves in notebooks through the leaf renderers of :mod:`slimkit.core.present`,
which import nothing of the catalogue back (see that package for why this arrow points down).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
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


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class StepEntry:
    """A lineage step: ``parents`` (model id, role) -> ``child_id`` through one method.

    The one shape of a step everywhere: the runner makes it, a model's ``slimkit.json`` stores it
    (:meth:`to_json` / :meth:`from_json`; the file format is unchanged), the catalogue returns it
    and every screen draws it. ``uses`` lists the methods it ran inside it (its scorers) as
    ``{family, plugin, plugin_version, config}``: with the compressor's own, the step's identity.
    """

    id: str
    child_id: str | None
    parents: tuple[tuple[str, str], ...]
    method: str
    family: str
    config: dict[str, Any]
    plugin: str
    plugin_version: str | None
    versions: dict[str, str]
    seed: int = 0
    status: str = "done"
    created: datetime = field(default_factory=_now)
    calibration: dict[str, Any] | None = None
    calibration_fingerprint: str | None = None
    wall_time_s: float | None = None
    peak_rss_bytes: int | None = None
    summary: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    uses: tuple[dict[str, Any], ...] = ()

    @property
    def method_version(self) -> int:
        """The compressor's class version (stored in its config as ``{type, version, data}``)."""
        return int(self.config.get("version", 1))

    @property
    def input_id(self) -> str | None:
        """The model this step changed (its first ``input`` parent)."""
        return next((model for model, role in self.parents if role == "input"), None)

    @property
    def step_id(self) -> str:  # the name slimkit.json uses
        return self.id

    @property
    def parent_id(self) -> str:  # the name slimkit.json uses
        return self.input_id or ""

    def to_json(self) -> dict[str, Any]:
        """The step as ``slimkit.json`` stores it."""
        return {
            "method": self.method, "family": self.family, "config": self.config, "plugin": self.plugin,
            "plugin_version": self.plugin_version, "versions": dict(self.versions), "parent_id": self.parent_id,
            "step_id": self.id, "child_id": self.child_id or "",
            "parents": [{"model_id": m, "role": r} for m, r in self.parents], "uses": [dict(u) for u in self.uses],
            "calibration": self.calibration, "calibration_fingerprint": self.calibration_fingerprint,
            "seed": self.seed, "wall_time_s": self.wall_time_s or 0.0, "peak_rss_bytes": self.peak_rss_bytes,
            "summary": self.summary or "", "details": dict(self.details),
            "started": self.created.isoformat(timespec="seconds"), "status": self.status,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "StepEntry":
        """A step read from ``slimkit.json`` (files written before ``parents`` or ``uses`` existed too)."""
        parents = data.get("parents") or [{"model_id": data["parent_id"], "role": "input"}]
        try:
            created = datetime.fromisoformat(data["started"]) if data.get("started") else _now()
        except ValueError:
            created = _now()
        return cls(
            id=data["step_id"], child_id=data.get("child_id") or None,
            parents=tuple((p["model_id"], p["role"]) for p in parents), method=data["method"],
            family=data.get("family", "compressor"), config=dict(data["config"]), plugin=data.get("plugin", ""),
            plugin_version=data.get("plugin_version"), versions=dict(data.get("versions") or {}),
            seed=int(data.get("seed", 0)), status=data.get("status", "done"),
            created=created if created.tzinfo else created.replace(tzinfo=timezone.utc),
            calibration=data.get("calibration"), calibration_fingerprint=data.get("calibration_fingerprint"),
            wall_time_s=data.get("wall_time_s"), peak_rss_bytes=data.get("peak_rss_bytes"),
            summary=data.get("summary"), details=dict(data.get("details") or {}),
            uses=tuple(dict(u) for u in data.get("uses") or ()),
        )

    def to_dict(self) -> dict[str, Any]:
        """The catalogue's view (``--json`` of the catalogue commands): every field, plus the version."""
        data = {key: _jsonable(value) for key, value in asdict(self).items()}
        data["parents"] = [{"model_id": m, "role": r} for m, r in self.parents]
        data["uses"] = [dict(u) for u in self.uses]
        data["method_version"] = self.method_version
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
    """One invocation: a recipe run, an evaluation or an export."""

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


@dataclass(frozen=True)
class ExportEntry:
    """A model written in a serving format: where, how big, its sha256 and what wrote it.

    ``config`` is the exporter's validated parameters; ``run_id`` the run that wrote it (a recipe
    with an ``export:`` section, or ``slimkit export``).
    """

    id: int
    model_id: str
    format: str
    exporter_version: int
    plugin: str
    plugin_version: str | None
    config: dict[str, Any]
    path: str
    size_bytes: int
    sha256: str
    created: datetime
    run_id: str | None = None

    @property
    def present(self) -> bool:
        """Whether something is still at :attr:`path` (it may have been changed since)."""
        return Path(self.path).exists()

    def to_dict(self) -> dict[str, Any]:
        return {key: _jsonable(value) for key, value in asdict(self).items()}

    def _repr_json_(self) -> dict[str, Any]:
        return self.to_dict()
