"""Which plugins load, and what became of every plugin slimkit found.

Installed plugins are the ``slimkit`` entry points. ``SLIMKIT_LOAD_PLUGINS`` (a comma list: load
only these; empty: none; unset: all) and ``SLIMKIT_BLOCK_PLUGINS`` (never load these) choose among
them, by entry-point or distribution name; blocking also takes bundled module names. A name in
either list that matches nothing installed is reported as a plugin problem rather than ignored,
and every plugin that was found but did not load is kept as a :class:`PluginInfo` with its status,
so ``slimkit plugins`` can list it.
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

import pluggy

from slimkit.core.errors import PluginError

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.host import Host

ENTRY_POINT_GROUP = "slimkit"
ENV_LOAD = "SLIMKIT_LOAD_PLUGINS"
ENV_BLOCK = "SLIMKIT_BLOCK_PLUGINS"

#: What :attr:`PluginInfo.status` can say. The first two are registered plugins; the others did not load.
STATUSES = ("ok", "partly loaded", "broken", "blocked", "not selected", "not installed")


@dataclass(frozen=True)
class PluginInfo:
    """One plugin: its name, distribution version, hooks, where it came from and how it fared.

    ``status`` is ``ok``; ``partly loaded`` (registered, but a hook raised or a method was refused);
    ``broken`` (found, but failed to import, failed validation or its name was taken); ``blocked``
    (``SLIMKIT_BLOCK_PLUGINS``); ``not selected`` (installed, but ``SLIMKIT_LOAD_PLUGINS`` does not
    name it); or ``not installed`` (a name in one of those variables that matches nothing; its
    ``source`` is the variable). ``errors`` holds the problem lines, one per problem.
    """

    name: str
    version: str | None
    hooks: tuple[str, ...]
    source: str  # "bundled", "entrypoint", "registered", or the variable naming a plugin not installed
    distribution: str | None = None
    status: str = "ok"
    errors: tuple[str, ...] = ()


def split_env(value: str | None) -> set[str] | None:
    """A comma list from the environment; ``None`` when the variable is unset."""
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


@dataclass(frozen=True)
class Selection:
    """The names to load only (``None``: all) and to block, and where each list came from."""

    only: set[str] | None
    block: set[str]
    only_from: str = ENV_LOAD
    block_from: str = ENV_BLOCK

    @classmethod
    def from_arguments(cls, only: Iterable[str] | None, block: Iterable[str] | None) -> "Selection":
        """``make_host``'s ``only``/``block`` arguments, each defaulting to its environment variable."""
        return cls(
            only=set(only) if only is not None else split_env(os.environ.get(ENV_LOAD)),
            block=set(block) if block is not None else (split_env(os.environ.get(ENV_BLOCK)) or set()),
            only_from=ENV_LOAD if only is None else "make_host(only=...)",
            block_from=ENV_BLOCK if block is None else "make_host(block=...)",
        )


def installed_entry_points() -> list[Any]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def _dist(ep: Any) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    return getattr(dist, "name", None), getattr(dist, "version", None)


def check_names(host: "Host", selection: Selection, entry_points: list[Any], bundled: Iterable[str],
                *, check_only: bool) -> None:
    """Report names in the load/block lists that match no installed plugin (one problem per list)."""
    known = {ep.name for ep in entry_points} | {name for ep in entry_points if (name := _dist(ep)[0])}
    known |= set(bundled)  # blocking takes module names; loading one is a harmless no-op (always loaded)
    installed = ", ".join(sorted({f"{ep.name} ({_dist(ep)[0]})" if _dist(ep)[0] else ep.name
                                  for ep in entry_points})) or "none besides the bundled ones"
    lists = [(selection.block_from, selection.block, "; bundled plugins are blocked by module name "
              "(slimkit plugins --all lists them)")]
    if check_only and selection.only is not None:
        lists.insert(0, (selection.only_from, selection.only, ""))
    for variable, names, hint in lists:
        unknown = sorted(names - known)
        if not unknown:
            continue
        listed = ", ".join(repr(name) for name in unknown)
        verb = "is" if len(unknown) == 1 else "are"
        problem = f"{variable} names {listed}, which {verb} not installed (installed plugins: {installed}){hint}"
        host._report(PluginError(problem))
        for name in unknown:
            host._record_unloaded(PluginInfo(name, None, (), variable, None, "not installed", (problem,)))


def _not_loaded(host: "Host", ep: Any, status: str, error: str | None = None) -> None:
    dist_name, dist_version = _dist(ep)
    host._record_unloaded(PluginInfo(ep.name, dist_version, (), "entrypoint", dist_name, status,
                                     (error,) if error else ()))
    if error:
        host._report(PluginError(error))


def load_entry_points(host: "Host", selection: Selection, entry_points: list[Any]) -> None:
    """Import and register the selected entry points; record what became of the others."""
    for ep in entry_points:
        dist_name, dist_version = _dist(ep)
        if ep.name in selection.block or (dist_name and dist_name in selection.block):
            _not_loaded(host, ep, "blocked")
            continue
        if selection.only is not None and ep.name not in selection.only and dist_name not in selection.only:
            _not_loaded(host, ep, "not selected")
            continue
        if host.pm.get_plugin(ep.name) is not None:
            holder = host._meta.get(ep.name, (None, "", None))[2] or "another plugin"
            _not_loaded(host, ep, "broken", f"plugin {ep.name!r} from distribution {dist_name} skipped: "
                                            f"the name is taken by {holder}")
            continue
        label = f"{ep.name!r}" + (f" (distribution {dist_name})" if dist_name else "")
        try:
            plugin = ep.load()
        except Exception as error:
            _not_loaded(host, ep, "broken", f"plugin {label} failed to import: {error!r}")
            continue
        try:
            host.register(plugin, name=ep.name, version=dist_version, source="entrypoint", distribution=dist_name)
        except (pluggy.PluginValidationError, PluginError, ValueError) as error:
            _not_loaded(host, ep, "broken", f"plugin {label} is invalid: {error}")
