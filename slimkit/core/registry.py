"""Registries of installed methods, filled through the ``register_*`` hooks.

The ``register`` callback a hook receives checks the class it is given, refuses a name that
another plugin already registered in the same family (naming both plugins), and stamps the entry
with the supplying plugin's name and distribution version so lineage can say what made a model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, TypeVar

from pydantic import BaseModel

from slimkit.core.contracts import GRANULARITIES, Family
from slimkit.core.errors import PluginError, UnknownMethodError

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_.\-]*$")

#: The method each family's class must define.
WORK_METHOD: dict[str, str] = {
    "scorer": "score",
    "compressor": "compress_",
    "evaluator": "evaluate",
    "architecture": "layout",
    "exporter": "export",
}

T = TypeVar("T")


@dataclass(frozen=True)
class MethodInfo(Generic[T]):
    """One registered class and where it came from."""

    family: Family
    name: str
    version: int
    cls: type[T]
    plugin: str
    plugin_version: str | None
    description: str

    def create(self) -> T:
        return self.cls()

    @property
    def config_cls(self) -> type[BaseModel] | None:
        return getattr(self.cls, "Config", None)


def _description(cls: type) -> str:
    text = getattr(cls, "description", "") or (cls.__doc__ or "").strip()
    return text.strip().splitlines()[0] if text.strip() else ""


def validate_method_class(family: Family, cls: Any) -> list[str]:
    """Problems with ``cls`` as a member of ``family`` (empty when it is fine)."""
    if not isinstance(cls, type):
        return [f"register() takes a class, got {type(cls).__name__}"]
    problems = []
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        problems.append(f"{cls.__qualname__}.name must be a lower-case identifier, got {name!r}")
    if not callable(getattr(cls, WORK_METHOD[family], None)):
        problems.append(f"{cls.__qualname__} has no {WORK_METHOD[family]}() method")
    if family == "architecture":
        return problems
    version = getattr(cls, "version", None)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        problems.append(f"{cls.__qualname__}.version must be an integer >= 1, got {version!r}")
    config = getattr(cls, "Config", None)
    if not (isinstance(config, type) and issubclass(config, BaseModel)):
        problems.append(f"{cls.__qualname__}.Config must be a pydantic model class")
    else:
        settings = config.model_config
        if settings.get("extra") != "forbid" or not settings.get("frozen"):
            problems.append(
                f"{cls.__qualname__}.Config must be frozen and forbid extra fields "
                "(subclass slimkit.MethodConfig)"
            )
        for field_name, info in config.model_fields.items():
            # One shared list or dict behind every run's config is a bug waiting for a mutation.
            if isinstance(info.default, (list, dict, set, bytearray)):
                problems.append(
                    f"{cls.__qualname__}.Config.{field_name} has a mutable default {info.default!r}; "
                    "use a tuple or Field(default_factory=...)"
                )
    if family == "exporter" and getattr(cls, "writes", None) not in ("file", "folder"):
        problems.append(f"{cls.__qualname__}.writes must be 'file' or 'folder', got {getattr(cls, 'writes', None)!r}")
    if family == "scorer" and getattr(cls, "granularity", None) not in GRANULARITIES:
        problems.append(
            f"{cls.__qualname__}.granularity must be one of {', '.join(GRANULARITIES)}"
        )
    return problems


class Registry(Generic[T]):
    """The installed classes of one family, by name, in registration order."""

    def __init__(self, family: Family) -> None:
        self.family = family
        self._entries: dict[str, MethodInfo[T]] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[MethodInfo[T]]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def get(self, name: str) -> MethodInfo[T]:
        try:
            return self._entries[name]
        except KeyError:
            installed = ", ".join(sorted(self._entries)) or "none"
            raise UnknownMethodError(
                f"unknown {self.family} {name!r}; installed {self.family}s: {installed}"
            ) from None

    def callback(
        self, plugin: str, plugin_version: str | None, report: Callable[[PluginError], None]
    ) -> Callable[[type], None]:
        """The ``register`` function handed to one plugin's hook implementation."""

        def register(cls: type) -> None:
            problems = validate_method_class(self.family, cls)
            if problems:
                report(PluginError(f"plugin {plugin!r}: " + "; ".join(problems)))
                return
            name = cls.name  # type: ignore[attr-defined]
            existing = self._entries.get(name)
            if existing is not None:
                report(
                    PluginError(
                        f"{self.family} {name!r} from plugin {plugin!r} refused: "
                        f"plugin {existing.plugin!r} already registered that name"
                    )
                )
                return
            self._entries[name] = MethodInfo(
                family=self.family,
                name=name,
                version=int(getattr(cls, "version", 1)),
                cls=cls,
                plugin=plugin,
                plugin_version=plugin_version,
                description=_description(cls),
            )

        return register
