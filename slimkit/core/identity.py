"""The identity of a step: every method that shapes its result, known before it runs.

A step's id (:func:`~slimkit.core.provenance.step_key`) hashes its parents, calibration data, seed
and this identity: the compressor and each method it runs inside the step (a pruner's scorer),
each by name, class ``version``, supplying plugin, that plugin's distribution version and the
validated config. Changing any of them (a third-party scorer's formula with its ``version``, its
distribution's release, one scorer parameter) makes a new step, so the catalogue never reuses a
result that a different method produced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from pydantic import ValidationError

from slimkit.core.config import MethodConfig, validation_problems
from slimkit.core.errors import PluginError, SlimkitError, UnknownMethodError

T = TypeVar("T")

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.host import Host
    from slimkit.core.registry import MethodInfo


@dataclass(frozen=True)
class MethodIdentity:
    """One method as it shaped a step: what the step id and the lineage record of it."""

    family: str
    name: str
    version: int
    plugin: str
    plugin_version: str | None
    config: dict[str, Any]

    @classmethod
    def of(cls, info: "MethodInfo[Any]", config: MethodConfig) -> "MethodIdentity":
        return cls(info.family, info.name, info.version, info.plugin, info.plugin_version,
                   config.model_dump(mode="json"))

    def to_json(self) -> dict[str, Any]:
        """The stored form (``slimkit.json`` and the catalogue): config as ``{type, version, data}``."""
        return {"family": self.family, "plugin": self.plugin, "plugin_version": self.plugin_version,
                "config": {"type": self.name, "version": self.version, "data": self.config}}


def resolve_uses(host: "Host", info: "MethodInfo[Any]", config: MethodConfig, label: str,
                 problems: list[str]) -> tuple[MethodIdentity, ...]:
    """The methods a compressor declares it will run with ``config`` (``uses``), looked up and
    their params validated; every problem is appended to ``problems`` naming ``label``."""
    uses_of = getattr(info.create(), "uses", None)
    if uses_of is None:  # a compressor that does not subclass BaseCompressor and runs nothing else
        return ()
    try:
        declared = tuple(guarded(info, "uses", lambda: uses_of(config)))
    except SlimkitError as error:  # a plugin's bug is a PluginError line naming it, never a traceback
        problems.append(f"{label}: {error}")
        return ()
    resolved = []
    for use in declared:
        try:
            nested = host.registry(use.family).get(use.name)
        except (UnknownMethodError, KeyError) as error:
            problems.append(f"{label}: {error}")
            continue
        try:
            nested_config = nested.cls.Config.model_validate(dict(use.params))
        except ValidationError as error:
            problems.extend(f"{label}: {use.family} {use.name!r}: {line}"
                            for line in validation_problems(error, nested.cls.Config, nested.name))
            continue
        resolved.append(MethodIdentity.of(nested, nested_config))
    return tuple(resolved)


def step_identity(info: "MethodInfo[Any]", serial: dict[str, Any], uses: tuple[MethodIdentity, ...]) -> dict[str, Any]:
    """What the step id hashes besides parents, data and seed."""
    return {"config": serial, "plugin": info.plugin, "plugin_version": info.plugin_version,
            "uses": [use.to_json() for use in uses]}


def plugin_label(info: Any) -> str:
    """``compressor 'prune.x' (plugin 'acme' 0.3.1)``: a method and where it came from."""
    version = f" {info.plugin_version}" if getattr(info, "plugin_version", None) else ""
    return f"{info.family} {info.name!r} (plugin {info.plugin!r}{version})"


def plugin_failure(info: Any, operation: str, error: BaseException) -> str:
    """One line for an exception a plugin's method raised: which method, which plugin, what."""
    cause = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{plugin_label(info)} failed in {operation}: {type(error).__name__}{': ' + cause if cause else ''}"


def guarded(info: Any, operation: str, call: Callable[[], T]) -> T:
    """``call()``, with an exception from the plugin's own code (anything but a
    :class:`SlimkitError` or an interrupt) turned into one :class:`PluginError` line naming the
    method, its plugin and the cause; the original is chained (``--debug`` shows it)."""
    try:
        return call()
    except SlimkitError:
        raise
    except Exception as error:
        raise PluginError(plugin_failure(info, operation, error)) from error
