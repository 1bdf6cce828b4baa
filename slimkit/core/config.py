"""Method configuration: one small frozen pydantic model per method.

A config's JSON schema is the single description of a method's parameters: recipes validate
against it, ``slimkit methods NAME`` prints it and the Jupyter forms are built from it, so a
third-party method gets all three by declaring fields with ``Field(description=...)``.

Configs are stored as ``{"type": name, "version": n, "data": {...}}`` and resolved back through
the plugin registry, so third-party configs round-trip exactly like bundled ones.
"""

from __future__ import annotations

from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, ValidationError

from slimkit.core.errors import ConfigError


class MethodConfig(BaseModel):
    """Base class for every method's parameters: frozen, and unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class EmptyConfig(MethodConfig):
    """Config of a method that takes no parameters."""


def describe_validation_error(error: ValidationError) -> list[str]:
    """Turn pydantic's errors into one line each: ``field: message (got value)``."""
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item.get("loc", ())) or "(config)"
        message = item.get("msg", "invalid")
        if item.get("type") == "extra_forbidden":
            message = "unknown parameter"
        got = item.get("input")
        suffix = f" (got {got!r})" if item.get("type") != "missing" and _short(got) else ""
        lines.append(f"{field}: {message}{suffix}")
    return lines


def validation_problems(error: ValidationError, config_cls: type[BaseModel], owner: str) -> list[str]:
    """:func:`describe_validation_error`'s lines, an unknown parameter's line followed by what
    ``owner`` (the method or its config class, as the message names it) does take."""
    takes = f"; {owner} takes: {', '.join(config_cls.model_fields) or 'no parameters'}"
    return [line + (takes if "unknown parameter" in line else "") for line in describe_validation_error(error)]


def _short(value: Any) -> bool:
    return not isinstance(value, (dict, list)) or len(repr(value)) < 60


def build_config(config_cls: type[MethodConfig], params: Mapping[str, Any] | None, *, what: str) -> MethodConfig:
    """Validate ``params`` into ``config_cls`` or raise :class:`ConfigError` naming every field."""
    try:
        return config_cls.model_validate(dict(params or {}))
    except ValidationError as error:
        raise ConfigError(f"{what}: " + "; ".join(describe_validation_error(error))) from None


def serialise_config(name: str, version: int, config: MethodConfig) -> dict[str, Any]:
    """The stored form of a config: ``{type, version, data}`` with JSON-safe data."""
    return {"type": name, "version": version, "data": config.model_dump(mode="json")}


def config_schema(config_cls: type[MethodConfig]) -> dict[str, Any]:
    """JSON schema of a config class (what forms, recipes and ``slimkit methods`` show)."""
    return config_cls.model_json_schema()
