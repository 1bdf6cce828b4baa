"""The plugin host: builds a pluggy manager, loads plugins and answers "what is installed?".

Nothing is loaded at import time. :func:`make_host` builds a fresh :class:`Host` (tests build
their own); :func:`get_host` returns a lazily built process-wide one for the CLI and the API.
A plugin that fails to import, registers something invalid or raises in a hook is recorded in
:attr:`Host.problems` by name, a warning is issued, and every other plugin keeps working;
:meth:`Host.plugin_infos` says what became of each plugin (see :mod:`slimkit.core.plugin_loading`).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import warnings
from functools import partial
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import pluggy
from torch import nn

from slimkit.core import hookspecs
from slimkit.core.architecture import ArchitectureAdapter
from slimkit.core.config import MethodConfig, build_config
from slimkit.core.contracts import Family, MethodContext
from slimkit.core.errors import ArchitectureError, ConfigError, PluginError, PluginWarning, UnknownMethodError
from slimkit.core.plugin_loading import (  # noqa: F401  (ENTRY_POINT_GROUP, ENV_*: re-exported)
    ENTRY_POINT_GROUP,
    ENV_BLOCK,
    ENV_LOAD,
    PluginInfo,
    Selection,
    check_names,
    installed_entry_points,
    load_entry_points,
)
from slimkit.core.registry import MethodInfo, Registry

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.model_io import LoadedModel
    from slimkit.core.scores import Scores

#: Bundled plugins: ordinary plugin modules registered through the same hooks as third-party ones.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "slimkit.plugins.architectures.llama",
    "slimkit.plugins.architectures.gpt2",
    "slimkit.plugins.architectures.opt",
    "slimkit.plugins.architectures.bert",
    "slimkit.plugins.architectures.finder",
    "slimkit.plugins.pruning.magnitude",
    "slimkit.plugins.pruning.wanda",
    "slimkit.plugins.pruning.unstructured",
    "slimkit.plugins.pruning.nm",
    "slimkit.plugins.pruning.sparsegpt",
    "slimkit.plugins.pruning.blocks",
    "slimkit.plugins.pruning.neuron_scores",
    "slimkit.plugins.pruning.mutual_information",
    "slimkit.plugins.pruning.structured",
    "slimkit.plugins.pruning.taylor",
    "slimkit.plugins.quantization.rtn",
    "slimkit.plugins.quantization.awq",
    "slimkit.plugins.quantization.smoothquant",
    "slimkit.plugins.quantization.gptq",
    "slimkit.plugins.quantization.dequantize",
    "slimkit.plugins.lowrank.svd",
    "slimkit.plugins.lowrank.densify",
    "slimkit.plugins.distill.distill",
    "slimkit.plugins.evaluators.perplexity",
    "slimkit.plugins.evaluators.size",
    "slimkit.plugins.evaluators.stsb",
    "slimkit.plugins.evaluators.latency",
    "slimkit.plugins.export.compressed_tensors.plugin",
    "slimkit.plugins.export.gguf.plugin",
)

FAMILY_HOOKS: dict[str, str] = {
    "scorer": "register_scorers",
    "compressor": "register_compressors",
    "architecture": "register_architectures",
    "evaluator": "register_evaluators",
    "exporter": "register_exporters",
}


def slimkit_version() -> str:
    try:
        return importlib.metadata.version("slimkit")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "0.0.0+unknown"


class Host:
    """A plugin manager plus the registries it feeds. Build one with :func:`make_host`."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self.problems: list[PluginError] = []
        self._errors: dict[str, list[str]] = {}  # problems of registered plugins, by plugin name
        self._unloaded: list[PluginInfo] = []  # plugins found but not registered, and unknown names
        self._meta: dict[str, tuple[str | None, str, str | None]] = {}
        self._registries: dict[str, Registry[Any]] | None = None
        self._adapters: dict[str, ArchitectureAdapter] | None = None

    # -- plugins -------------------------------------------------------------------------
    def register(
        self,
        plugin: object,
        name: str | None = None,
        *,
        version: str | None = None,
        source: str = "registered",
        distribution: str | None = None,
    ) -> str:
        """Register a plugin object or module; returns the name it was registered under."""
        try:
            registered = self.pm.register(plugin, name=name)
        except ValueError as error:  # pluggy: the name or the object is already registered
            raise PluginError(f"plugin {name or plugin!r} cannot be registered: {error}") from None
        if registered is None:
            raise PluginError(f"plugin {name or plugin!r} is blocked")
        plugin_version = version if version is not None else getattr(plugin, "__version__", None)
        self._meta[registered] = (plugin_version, source, distribution)
        self._invalidate()
        return registered

    def unregister(self, plugin: object | None = None, name: str | None = None) -> None:
        """Remove a plugin (by object or registered name); its methods leave the registries."""
        registered_name = name or (self.pm.get_name(plugin) if plugin is not None else None)
        self.pm.unregister(plugin=plugin, name=name)
        if registered_name is not None:
            self._meta.pop(registered_name, None)
            self._errors.pop(registered_name, None)
        self._invalidate()

    def _invalidate(self) -> None:
        self._registries = None
        self._adapters = None

    def _report(self, problem: PluginError, plugin: str | None = None) -> None:
        """Record a problem (once), warn, and charge it to the registered ``plugin`` if given."""
        if plugin is not None and self.pm.get_plugin(plugin) is not None:
            errors = self._errors.setdefault(plugin, [])
            if str(problem) not in errors:
                errors.append(str(problem))
        if str(problem) not in {str(p) for p in self.problems}:
            self.problems.append(problem)
            warnings.warn(str(problem), PluginWarning, stacklevel=3)

    def _record_unloaded(self, info: PluginInfo) -> None:
        self._unloaded.append(info)

    def plugin_infos(self, *, unloaded: bool = False) -> list[PluginInfo]:
        """The registered plugins (status ``ok`` or ``partly loaded``), in registration order; with
        ``unloaded``, then the ones found but not loaded (``broken``, ``blocked``, ``not selected``)
        and the names in ``SLIMKIT_LOAD_PLUGINS``/``SLIMKIT_BLOCK_PLUGINS`` that match nothing
        (``not installed``)."""
        self._collect()  # the register_* hooks decide whether a plugin is only partly loaded
        infos = []
        for name, plugin in self.pm.list_name_plugin():
            version, source, dist = self._meta.get(name, (None, "registered", None))
            hooks = tuple(sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or ()))
            errors = tuple(self._errors.get(name, ()))
            infos.append(PluginInfo(name, version, hooks, source, dist, "partly loaded" if errors else "ok", errors))
        return infos + (list(self._unloaded) if unloaded else [])

    # -- registries ----------------------------------------------------------------------
    def _collect(self) -> dict[str, Registry[Any]]:
        if self._registries is not None:
            return self._registries
        registries: dict[str, Registry[Any]] = {}
        for family, hook_name in FAMILY_HOOKS.items():
            registry: Registry[Any] = Registry(family)  # type: ignore[arg-type]
            caller = getattr(self.pm.hook, hook_name)
            for impl in _plain_impls(caller):
                version = self._meta.get(impl.plugin_name, (None,))[0]
                report = partial(self._report, plugin=impl.plugin_name)
                register = registry.callback(impl.plugin_name, version, report)
                try:
                    impl.function(register=register)
                except Exception as error:  # a broken plugin must not take the others down
                    report(PluginError(f"plugin {impl.plugin_name!r} raised in {hook_name}: {error!r}"))
            registries[family] = registry
        self._registries = registries
        return registries

    def registry(self, family: Family) -> Registry[Any]:
        """The installed methods of ``family`` (``"scorer"``, ``"compressor"``, ...), by name."""
        return self._collect()[family]

    @property
    def scorers(self) -> Registry[Any]:
        """The installed scorers (``registry("scorer")``)."""
        return self.registry("scorer")

    @property
    def compressors(self) -> Registry[Any]:
        """The installed compressors (``registry("compressor")``)."""
        return self.registry("compressor")

    @property
    def evaluators(self) -> Registry[Any]:
        """The installed evaluators (``registry("evaluator")``)."""
        return self.registry("evaluator")

    @property
    def exporters(self) -> Registry[Any]:
        """The installed exporters (``registry("exporter")``)."""
        return self.registry("exporter")

    @property
    def architectures(self) -> Registry[Any]:
        """The installed architecture adapters (``registry("architecture")``)."""
        return self.registry("architecture")

    def methods(self, family: Family | None = None) -> list[MethodInfo[Any]]:
        """Every installed method, or those of one ``family``, in registration order."""
        families = [family] if family else list(FAMILY_HOOKS)
        return [info for fam in families for info in self.registry(fam)]  # type: ignore[arg-type]

    def find_method(self, name: str, families: Iterable[Family] | None = None) -> MethodInfo[Any]:
        """The method called ``name`` in any family (or the given ones).

        Names are unique within a family; a name used by several families must be asked for
        with the family, and an ambiguous request says so rather than picking one.
        """
        matches = [info for info in self.methods() if info.name == name]
        if families is not None:
            matches = [info for info in matches if info.family in set(families)]
        if not matches:
            names = ", ".join(sorted({info.name for info in self.methods()}))
            raise UnknownMethodError(f"no installed method called {name!r}; installed: {names}")
        if len(matches) > 1:
            kinds = " and ".join(("an " if info.family[0] in "aeiou" else "a ") + info.family for info in matches)
            raise UnknownMethodError(f"{name!r} is {kinds}; say which family you mean")
        return matches[0]

    # -- configs -------------------------------------------------------------------------
    def config(self, info: MethodInfo[Any], params: Mapping[str, Any] | None) -> MethodConfig:
        """``params`` validated into ``info``'s ``Config``; :class:`ConfigError` names every bad field."""
        return build_config(info.cls.Config, params, what=f"{info.family} {info.name!r}")

    def config_from_dict(self, family: Family, stored: Mapping[str, Any]) -> tuple[MethodInfo[Any], MethodConfig]:
        """Resolve a stored ``{type, version, data}`` config back to its class and values."""
        try:
            name, version, data = stored["type"], stored["version"], stored["data"]
        except (KeyError, TypeError):
            raise ConfigError(f"stored config must have type, version and data, got {stored!r}") from None
        info = self.registry(family).get(name)
        if version != info.version:
            raise ConfigError(
                f"{family} {name!r} config is version {version} but the installed plugin "
                f"{info.plugin!r} implements version {info.version}"
            )
        return info, self.config(info, data)

    # -- architectures -------------------------------------------------------------------
    def adapters(self) -> dict[str, ArchitectureAdapter]:
        """One instance of every installed architecture adapter, by name."""
        if self._adapters is None:
            self._adapters = {info.name: info.create() for info in self.architectures}
        return self._adapters

    def adapter_for(self, model: "nn.Module | LoadedModel") -> ArchitectureAdapter:
        """The adapter for ``model``, chosen through the ``find_architecture`` hook."""
        module = model if isinstance(model, nn.Module) else model.model
        adapters = self.adapters()
        # Call implementations one by one (pluggy's order) so a raising plugin is reported by name.
        for impl in reversed(_plain_impls(self.pm.hook.find_architecture)):
            try:
                answer = impl.function(model=module, adapters=adapters)
            except Exception as error:
                self._report(PluginError(f"plugin {impl.plugin_name!r} raised in find_architecture: {error!r}"),
                             impl.plugin_name)
                continue
            if answer is None:
                continue
            if isinstance(answer, ArchitectureAdapter):
                return answer
            self._report(PluginError(
                f"plugin {impl.plugin_name!r} answered find_architecture with "
                f"{type(answer).__name__}, not an ArchitectureAdapter"
            ), impl.plugin_name)
        config = getattr(module, "config", None)
        model_type = getattr(config, "model_type", None)
        installed = ", ".join(
            f"{name} ({'/'.join(a.model_types) or 'custom'})" for name, a in adapters.items()
        ) or "none"
        raise ArchitectureError(
            f"no architecture adapter for {type(module).__name__} (model_type {model_type!r}); "
            f"installed adapters: {installed}"
        )

    # -- running single methods ------------------------------------------------------------
    def context(self, **kwargs: Any) -> MethodContext:
        """A :class:`MethodContext` on this host (``calibration=``, ``seed=``, ``progress=``, ...)."""
        return MethodContext(host=self, **kwargs)

    def score(
        self,
        name: str,
        model: "LoadedModel",
        *,
        adapter: ArchitectureAdapter | None = None,
        params: Mapping[str, Any] | None = None,
        context: MethodContext | None = None,
    ) -> "Scores":
        """Run the scorer ``name`` on ``model`` and return its :class:`~slimkit.core.scores.Scores`."""
        from slimkit.core.scores import checked_scores

        info = self.scorers.get(name)
        config = self.config(info, params)
        ctx = context or self.context()
        if info.cls.needs_calibration and ctx.calibration is None:
            raise ConfigError(f"scorer {name!r} needs calibration data")
        adapter = adapter or self.adapter_for(model)
        refs = [ref for _, ref in adapter.layout(model.model).linears()]
        return checked_scores(info, lambda: info.create().score(model, adapter, config, ctx), refs)

    def evaluate(
        self,
        name: str,
        model: "LoadedModel",
        *,
        params: Mapping[str, Any] | None = None,
        context: MethodContext | None = None,
    ) -> dict[str, float]:
        """Run the evaluator ``name`` on ``model`` and return its metrics."""
        from slimkit.core.stream.guard import check_evaluator_streams

        info = self.evaluators.get(name)
        check_evaluator_streams(name, info, model)
        config = self.config(info, params)
        evaluator = info.create()
        ctx = context or self.context()
        evaluator.check(model, config, ctx)
        return dict(evaluator.evaluate(model, config, ctx))


def _plain_impls(caller: Any) -> list[Any]:
    """Hook implementations in pluggy's order, without wrappers.

    slimkit calls the implementations one by one, so that a plugin that raises is reported by
    name while the others still answer; wrappers only make sense around pluggy's own call loop.
    """
    return [impl for impl in caller.get_hookimpls() if not (impl.wrapper or impl.hookwrapper)]


def _check_pending(host: Host) -> None:
    """Unregister plugins that implement hooks slimkit does not define (usually typos)."""
    while True:
        try:
            host.pm.check_pending()
            return
        except pluggy.PluginValidationError as error:
            name = host.pm.get_name(error.plugin) or repr(error.plugin)
            problem = PluginError(f"plugin {name!r} is invalid: {error}")
            version, source, dist = host._meta.get(name, (None, "registered", None))
            host.unregister(plugin=error.plugin)
            host._record_unloaded(PluginInfo(name, version, (), source, dist, "broken", (str(problem),)))
            host._report(problem)


def make_host(
    load_entrypoints: bool = True,
    only: Iterable[str] | None = None,
    block: Iterable[str] | None = None,
    default_plugins: Iterable[str] = DEFAULT_PLUGINS,
) -> Host:
    """Build a fresh host with the bundled plugins and (optionally) installed ones.

    :param load_entrypoints: load plugins from the ``slimkit`` entry-point group.
    :param only: load only these entry-point or distribution names (default: ``SLIMKIT_LOAD_PLUGINS``,
        a comma list, empty for none; unset means all).
    :param block: never load these (default: ``SLIMKIT_BLOCK_PLUGINS``); bundled ones can be blocked too.

    A name in ``only`` or ``block`` that matches no installed plugin is a problem in :attr:`Host.problems`.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    host = Host(pm)
    selection = Selection.from_arguments(only, block)
    default_plugins = tuple(default_plugins)
    version = slimkit_version()
    for module_name in default_plugins:
        if module_name in selection.block:
            host._record_unloaded(PluginInfo(module_name, version, (), "bundled", "slimkit", "blocked"))
            continue
        host.register(importlib.import_module(module_name), name=module_name, version=version, source="bundled", distribution="slimkit")
    # Reading the entry points imports nothing; it is needed to tell a typo from an installed name.
    entry_points = installed_entry_points()
    check_names(host, selection, entry_points, default_plugins, check_only=load_entrypoints)
    if load_entrypoints:
        load_entry_points(host, selection, entry_points)
    _check_pending(host)
    host._collect()  # run the register_* hooks now, so problems show up at start
    return host


_default_host: Host | None = None


def get_host() -> Host:
    """The process-wide host, built on first use."""
    global _default_host
    if _default_host is None:
        _default_host = make_host()
    return _default_host
