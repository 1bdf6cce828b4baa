"""The plugin host, in process: bundled plugins, validation, problem reports, hooks and configs.

Tests build their hosts with the ``slimkit_host`` and ``register_plugin`` fixtures that
``slimkit.testing`` ships to plugin authors; they arrive through slimkit's ``pytest11`` entry point,
so using them here also tests that entry point. Entry-point loading is exercised with tiny
distributions written into a temporary folder and a subprocess whose ``PYTHONPATH`` points there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import click
import pluggy
import pytest
import torch
from click.testing import CliRunner
from pydantic import BaseModel, ConfigDict, Field

import slimkit
from slimkit import BaseEvaluator, BaseScorer, MethodConfig, Scores, hookimpl
from slimkit.core.architecture import ArchitectureAdapter
from slimkit.testing import write_distributions
from slimkit.core.config import serialise_config
from slimkit.core.errors import ArchitectureError, ConfigError, PluginError, UnknownMethodError
from slimkit.core.host import DEFAULT_PLUGINS, FAMILY_HOOKS, _check_pending, make_host, slimkit_version
from slimkit.plugins.architectures.llama import LlamaAdapter
from slimkit.plugins.pruning.magnitude import MagnitudeScorer

pytest_plugins = ("pytester",)


def make_plugin(**hooks: Any) -> types.SimpleNamespace:
    """A throwaway plugin object: each keyword is a hook name and the function implementing it."""
    return types.SimpleNamespace(**{name: hookimpl(function) for name, function in hooks.items()})


@pytest.fixture(scope="module")
def model() -> slimkit.LoadedModel:
    """The bundled 260K-parameter Llama; tests here only read it."""
    return slimkit.load_model("example:stories260K")


# -- methods used by the throwaway plugins -------------------------------------------------------
class OnesScorer(BaseScorer):
    """Every block projection weight scores one."""

    name = "test.ones"
    granularity = "weight"

    def score(self, model, adapter, config, ctx):
        values = {ref.name: torch.ones(ref.weight_out_in().shape) for _, ref in adapter.layout(model.model).linears()}
        return Scores(self.name, self.granularity, values)


class ThresholdConfig(MethodConfig):
    threshold: float = Field(0.5, ge=0.0, description="Scores below this count as unimportant.")
    roles: tuple[str, ...] = Field(("up",), description="Projections to score.")


class ThresholdScorer(BaseScorer):
    """1 where |W| exceeds the threshold, else 0."""

    name = "test.threshold"
    version = 3
    granularity = "weight"
    Config = ThresholdConfig

    def score(self, model, adapter, config, ctx):  # pragma: no cover - only its config is used
        raise NotImplementedError


class ConstantEvaluator(BaseEvaluator):
    """Always 1.0."""

    name = "test.constant"

    def evaluate(self, model, config, ctx):
        return {"constant": 1.0}


# -- the fixtures themselves -------------------------------------------------------------------
def test_slimkit_testing_is_loaded_through_its_pytest11_entry_point(request: pytest.FixtureRequest) -> None:
    import slimkit.testing

    assert request.config.pluginmanager.get_plugin("slimkit") is slimkit.testing


def test_slimkit_testing_imports_without_torch() -> None:
    # pytest imports every pytest11 plugin at start-up, in every project of the environment.
    code = "import sys, slimkit.testing; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_register_plugin_unregisters_after_the_test_even_when_it_fails(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import types
        from slimkit import BaseEvaluator, hookimpl

        class Ones(BaseEvaluator):
            name = "throwaway.ones"
            def evaluate(self, model, config, ctx):
                return {"ones": 1.0}

        PLUGIN = types.SimpleNamespace(register_evaluators=hookimpl(lambda register: register(Ones)))
        HOSTS = []

        def test_registers(register_plugin, slimkit_host):
            host = register_plugin(PLUGIN, name="throwaway")
            HOSTS.append(host)
            assert host is slimkit_host
            assert host.evaluators.get("throwaway.ones").plugin == "throwaway"
            raise AssertionError("the plugin must be unregistered even so")

        def test_after():
            [host] = HOSTS
            assert host.pm.get_plugin("throwaway") is None
            assert "throwaway.ones" not in host.evaluators
            assert "size" in host.evaluators
        """
    )
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*the plugin must be unregistered even so*"])


def test_register_plugin_accepts_modules_classes_and_instances(register_plugin) -> None:
    module = types.ModuleType("my_module_plugin")
    module.register_evaluators = hookimpl(lambda register: register(ConstantEvaluator))

    class ClassHolder:
        @staticmethod
        @hookimpl
        def register_scorers(register):
            register(OnesScorer)

    class InstancePlugin:
        @hookimpl
        def register_scorers(self, register):
            register(ThresholdScorer)

    host = register_plugin(module)
    host = register_plugin(ClassHolder, name="class-holder")
    host = register_plugin(InstancePlugin(), name="instance")
    assert host.evaluators.get("test.constant").plugin == host.pm.get_name(module)
    assert host.scorers.get("test.ones").plugin == "class-holder"
    assert host.scorers.get("test.threshold").plugin == "instance"
    assert host.problems == []


# -- bundled plugins ---------------------------------------------------------------------------
def test_default_plugins_all_register(slimkit_host) -> None:
    infos = {info.name: info for info in slimkit_host.plugin_infos()}
    assert set(infos) == set(DEFAULT_PLUGINS)
    for name in DEFAULT_PLUGINS:
        info = infos[name]
        assert (info.source, info.distribution, info.version) == ("bundled", "slimkit", slimkit_version())
        assert info.hooks, f"bundled plugin {name} implements no hook"
    assert all(family in {m.family for m in slimkit_host.methods()} for family in FAMILY_HOOKS)
    assert slimkit_host.problems == []


def test_bundled_methods_record_their_module_and_slimkit_version(slimkit_host) -> None:
    assert slimkit_version() == "0.1.0"  # the installed distribution, not the source-tree fallback
    methods = slimkit_host.methods()
    assert len(methods) >= 8
    for info in methods:
        assert info.plugin == info.cls.__module__, info
        assert info.plugin in DEFAULT_PLUGINS
        assert info.plugin_version == slimkit_version()


def test_bundled_plugins_can_be_blocked() -> None:
    host = make_host(load_entrypoints=False, block=["slimkit.plugins.pruning.magnitude"])
    assert "magnitude" not in host.scorers
    assert "prune.unstructured" in host.compressors


# -- duplicates, raising hooks, invalid classes ------------------------------------------------
def test_duplicate_name_is_refused_naming_both_plugins(register_plugin, model) -> None:
    class Copycat(MagnitudeScorer):
        """Claims the bundled scorer's name."""

    host = register_plugin(make_plugin(register_scorers=lambda register: register(Copycat)), name="copycat")
    with pytest.warns(RuntimeWarning, match="copycat"):
        info = host.scorers.get("magnitude")
    [problem] = host.problems
    assert isinstance(problem, PluginError)
    assert "'copycat'" in str(problem) and "'slimkit.plugins.pruning.magnitude'" in str(problem)
    assert "'magnitude'" in str(problem)
    # The first registration stays, and works.
    assert info.cls is MagnitudeScorer and info.plugin == "slimkit.plugins.pruning.magnitude"
    scores = host.score("magnitude", model)
    assert scores.scorer == "magnitude" and len(scores.values) > 0


def test_duplicate_between_two_third_party_plugins_keeps_the_first(register_plugin) -> None:
    class Other(ConstantEvaluator):
        """Same name, other plugin."""

    register_plugin(make_plugin(register_evaluators=lambda register: register(ConstantEvaluator)), name="first")
    host = register_plugin(make_plugin(register_evaluators=lambda register: register(Other)), name="second")
    with pytest.warns(RuntimeWarning):
        info = host.evaluators.get("test.constant")
    assert (info.plugin, info.cls) == ("first", ConstantEvaluator)
    [problem] = host.problems
    assert "'first'" in str(problem) and "'second'" in str(problem)


def test_plugin_raising_in_a_register_hook_is_reported_and_others_work(register_plugin, model) -> None:
    def explode(register):
        raise RuntimeError("boom")

    register_plugin(make_plugin(register_scorers=explode), name="exploder")
    host = register_plugin(make_plugin(register_evaluators=lambda register: register(ConstantEvaluator)), name="fine")
    with pytest.warns(RuntimeWarning, match="exploder"):
        scorers = host.scorers
    [problem] = host.problems
    assert "'exploder'" in str(problem) and "register_scorers" in str(problem) and "boom" in str(problem)
    assert "magnitude" in scorers and host.score("magnitude", model).values
    assert host.evaluate("test.constant", model) == {"constant": 1.0}
    assert host.evaluate("size", model)["params"] > 0


class NamelessScorer(BaseScorer):
    """No name at all."""

    def score(self, model, adapter, config, ctx): ...


class LooseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")  # not frozen
    value: int = 1


class LooseConfigScorer(BaseScorer):
    """Config is mutable."""

    name = "test.loose"
    Config = LooseConfig

    def score(self, model, adapter, config, ctx): ...


class OpenConfig(MethodConfig):
    model_config = ConfigDict(extra="allow")  # frozen is inherited, extra fields are not refused


class OpenConfigEvaluator(BaseEvaluator):
    """Config accepts anything."""

    name = "test.open"
    Config = OpenConfig

    def evaluate(self, model, config, ctx): ...


class PixelScorer(BaseScorer):
    """Unknown granularity."""

    name = "test.pixel"
    granularity = "pixel"

    def score(self, model, adapter, config, ctx): ...


class VersionZeroCompressor(slimkit.BaseCompressor):
    """Versions start at 1."""

    name = "test.version-zero"
    version = 0

    def compress_(self, model, adapter, config, ctx): ...


class SharedListConfig(slimkit.MethodConfig):
    roles: list[str] = ["q_proj"]


class SharedDefaultCompressor(slimkit.BaseCompressor):
    """One list object behind every config's default."""

    name = "test.shared-default"
    Config = SharedListConfig

    def compress_(self, model, adapter, config, ctx): ...


class ShoutingEvaluator(BaseEvaluator):
    """Names are lower case."""

    name = "Test.Shouting"

    def evaluate(self, model, config, ctx): ...


@pytest.mark.parametrize(
    ("hook", "cls", "fragment"),
    [
        pytest.param("register_scorers", NamelessScorer, "name must be a lower-case identifier", id="no-name"),
        pytest.param("register_evaluators", ShoutingEvaluator, "name must be a lower-case identifier", id="upper-case-name"),
        pytest.param("register_scorers", LooseConfigScorer, "must be frozen", id="config-not-frozen"),
        pytest.param("register_evaluators", OpenConfigEvaluator, "forbid extra fields", id="config-allows-extra"),
        pytest.param("register_scorers", PixelScorer, "granularity must be one of", id="bad-granularity"),
        pytest.param("register_compressors", VersionZeroCompressor, "version must be an integer >= 1", id="version-0"),
        pytest.param("register_compressors", SharedDefaultCompressor,
                     "Config.roles has a mutable default ['q_proj']; use a tuple or Field(default_factory=...)",
                     id="mutable-default"),
    ],
)
def test_invalid_class_is_refused_naming_it(register_plugin, hook: str, cls: type, fragment: str) -> None:
    host = register_plugin(make_plugin(**{hook: lambda register: register(cls)}), name="sloppy")
    family = next(family for family, name in FAMILY_HOOKS.items() if name == hook)
    with pytest.warns(RuntimeWarning, match=cls.__name__):
        registry = host.registry(family)
    [problem] = host.problems
    assert cls.__name__ in str(problem) and "'sloppy'" in str(problem) and fragment in str(problem)
    assert all(info.cls is not cls for info in registry)


def test_register_takes_classes_not_instances(register_plugin) -> None:
    host = register_plugin(make_plugin(register_evaluators=lambda register: register(ConstantEvaluator())))
    with pytest.warns(RuntimeWarning, match="takes a class"):
        assert "test.constant" not in host.evaluators


def test_registering_a_taken_plugin_name_raises_plugin_error(register_plugin) -> None:
    register_plugin(make_plugin(register_evaluators=lambda register: None), name="taken")
    with pytest.raises(PluginError, match="taken"):
        register_plugin(make_plugin(register_scorers=lambda register: None), name="taken")


# -- misspelled hooks and broken entry points --------------------------------------------------
def test_check_pending_drops_a_plugin_with_a_misspelled_hook(register_plugin) -> None:
    def register_scorer(register):  # the hook is register_scorers
        register(OnesScorer)

    register_plugin(make_plugin(register_evaluators=lambda register: register(ConstantEvaluator)), name="ok")
    host = register_plugin(make_plugin(register_scorer=register_scorer), name="typo", check_hooks=False)
    with pytest.warns(RuntimeWarning, match="typo"):
        _check_pending(host)
    [problem] = host.problems
    assert "'typo'" in str(problem) and "register_scorer" in str(problem)
    assert host.pm.get_plugin("typo") is None and host.pm.get_plugin("ok") is not None
    assert "test.constant" in host.evaluators and "test.ones" not in host.scorers


def test_register_plugin_refuses_a_misspelled_hook_at_once(register_plugin, slimkit_host) -> None:
    with pytest.raises(pluggy.PluginValidationError, match="register_evaluator"):
        register_plugin(make_plugin(register_evaluator=lambda register: None), name="typo")
    # Registered anyway (pluggy checks afterwards), and removed with the others after the test.
    assert slimkit_host.pm.get_plugin("typo") is not None


FAKE_DISTRIBUTIONS: dict[str, tuple[str, str]] = {
    # distribution name: (entry point name, module source)
    "slimkit-typo-plugin": (
        "typo",
        """
        from slimkit import hookimpl

        @hookimpl
        def register_scorer(register):  # misspelled: the hook is register_scorers
            raise AssertionError("never called")
        """,
    ),
    "slimkit-broken-plugin": ("broken", "import slimkit_dependency_that_is_not_installed\n"),
    "slimkit-raiser-plugin": (
        "raiser",
        """
        from slimkit import hookimpl

        @hookimpl
        def register_scorers(register):
            raise RuntimeError("raiser is broken")
        """,
    ),
    # Two distributions claiming the same plugin name: one loads, the other must be reported.
    "slimkit-twin-a": ("twin", "from slimkit import hookimpl\n"),
    "slimkit-twin-b": ("twin", "from slimkit import hookimpl\n"),
    "slimkit-good-plugin": (
        "good",
        """
        from slimkit import BaseEvaluator, hookimpl

        class Constant(BaseEvaluator):
            \"\"\"Always 1.\"\"\"
            name = "good.constant"
            def evaluate(self, model, config, ctx):
                return {"constant": 1.0}

        @hookimpl
        def register_evaluators(register):
            register(Constant)
        """,
    ),
}


@pytest.fixture(scope="module")
def fake_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of installed-looking distributions (module + dist-info with an entry point)."""
    return write_distributions(tmp_path_factory.mktemp("fake-site"), FAKE_DISTRIBUTIONS, "1.0")


def load_in_subprocess(site: Path, code: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIMKIT_")}
    env["PYTHONPATH"] = str(site)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def fake_site_report(fake_site: Path) -> dict:
    """What ``make_host()`` made of the fake site, from a subprocess."""
    return load_in_subprocess(
        fake_site,
        """
        import json, warnings
        import torch
        import slimkit
        from slimkit.core.model_io import LoadedModel

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            host = slimkit.make_host()
            at_make_host = [str(p) for p in host.problems]
            evaluators = host.evaluators.names()
        print(json.dumps({
            "plugins": {p.name: p.distribution for p in host.plugin_infos()},
            "status": {f"{p.name} {p.distribution}": p.status for p in host.plugin_infos(unloaded=True)},
            "at_make_host": at_make_host,
            "problems": [str(p) for p in host.problems],
            "warnings": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)],
            "evaluators": evaluators,
            "good": host.evaluate("good.constant", LoadedModel(torch.nn.Linear(2, 2))),
        }))
        """,
    )


@pytest.mark.slow
def test_broken_entry_point_plugins_are_reported_by_name_and_the_rest_load(fake_site_report: dict) -> None:
    out = fake_site_report
    [typo] = [p for p in out["at_make_host"] if "'typo'" in p]
    assert "register_scorer" in typo and "slimkit-typo-plugin" not in out["plugins"].values()
    [broken] = [p for p in out["at_make_host"] if "'broken'" in p]
    assert "failed to import" in broken and "slimkit-broken-plugin" in broken
    assert "slimkit_dependency_that_is_not_installed" in broken
    assert "typo" not in out["plugins"] and "broken" not in out["plugins"]
    [raiser] = [p for p in out["problems"] if "'raiser'" in p]
    assert "register_scorers" in raiser and "raiser is broken" in raiser
    assert set(out["problems"]) <= set(out["warnings"])
    # The others still load: the good plugin and every bundled one.
    assert {"good", "raiser", *DEFAULT_PLUGINS} <= set(out["plugins"])
    assert "good.constant" in out["evaluators"] and "size" in out["evaluators"]
    assert out["good"] == {"constant": 1.0}
    assert out["plugins"]["twin"] in {"slimkit-twin-a", "slimkit-twin-b"}
    # What became of each is kept, for `slimkit plugins`.
    status = out["status"]
    assert status["typo slimkit-typo-plugin"] == status["broken slimkit-broken-plugin"] == "broken"
    assert status["raiser slimkit-raiser-plugin"] == "partly loaded"
    assert status["good slimkit-good-plugin"] == "ok"


@pytest.mark.slow
def test_two_distributions_claiming_one_plugin_name_are_reported(fake_site_report: dict) -> None:
    loaded = fake_site_report["plugins"]["twin"]
    skipped = ({"slimkit-twin-a", "slimkit-twin-b"} - {loaded}).pop()
    assert any("'twin'" in p and skipped in p and loaded in p for p in fake_site_report["problems"])
    assert fake_site_report["status"][f"twin {loaded}"] == "ok"
    assert fake_site_report["status"][f"twin {skipped}"] == "broken"


def test_a_plugin_raising_in_a_register_hook_is_reported_by_make_host(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(register):
        raise RuntimeError("boom")

    raiser = types.ModuleType("raiser_plugin")
    raiser.register_scorers = hookimpl(explode)
    monkeypatch.setitem(sys.modules, "raiser_plugin", raiser)
    with pytest.warns(RuntimeWarning, match="raiser_plugin"):
        host = make_host(load_entrypoints=False, default_plugins=(*DEFAULT_PLUGINS, "raiser_plugin"))
        problems = [str(problem) for problem in host.problems]
    assert any("'raiser_plugin'" in problem for problem in problems)


# -- find_architecture -------------------------------------------------------------------------
class MyLlamaAdapter(LlamaAdapter):
    """A plugin's own Llama adapter, claiming models the bundled one also claims."""

    name = "my-llama"


def test_tryfirst_find_architecture_overrides_the_default(register_plugin, model) -> None:
    mine = MyLlamaAdapter()
    seen: list[tuple[object, set[str]]] = []

    def find_architecture(model, adapters):
        seen.append((model, set(adapters)))
        return mine

    host = register_plugin(make_plugin(), name="unused")
    assert host.adapter_for(model).name == "llama"  # the bundled default
    register_plugin(types.SimpleNamespace(find_architecture=hookimpl(tryfirst=True)(find_architecture)), name="mine")
    assert host.adapter_for(model) is mine
    assert host.adapter_for(model.model) is mine
    assert seen[0][0] is model.model and "llama" in seen[0][1]
    assert host.adapter_for(model).layout(model.model).adapter == "my-llama"


def test_find_architecture_returning_none_defers_to_the_default(register_plugin, model) -> None:
    host = register_plugin(make_plugin(find_architecture=lambda model, adapters: None), name="shrug")
    assert host.adapter_for(model).name == "llama"
    assert host.problems == []


def test_find_architecture_raising_is_reported_and_the_default_answers(register_plugin, model) -> None:
    def find_architecture(model, adapters):
        raise KeyError("confused")

    host = register_plugin(types.SimpleNamespace(find_architecture=hookimpl(tryfirst=True)(find_architecture)), name="confused")
    with pytest.warns(RuntimeWarning, match="confused"):
        adapter = host.adapter_for(model)
    assert adapter.name == "llama"
    [problem] = host.problems
    assert "'confused'" in str(problem) and "find_architecture" in str(problem)


def test_a_wrapper_around_find_architecture_does_not_replace_the_answer(register_plugin, model) -> None:
    @hookimpl(wrapper=True)
    def find_architecture(model, adapters):
        return (yield)

    host = register_plugin(types.SimpleNamespace(find_architecture=find_architecture), name="wrapper")
    assert host.pm.hook.find_architecture(model=model.model, adapters=host.adapters()).name == "llama"
    assert isinstance(host.adapter_for(model), ArchitectureAdapter)


def test_no_adapter_is_an_architecture_error_listing_the_installed_ones(slimkit_host) -> None:
    with pytest.raises(ArchitectureError, match=r"no architecture adapter for Linear.*llama \(llama"):
        slimkit_host.adapter_for(torch.nn.Linear(2, 2))


def test_an_architecture_plugin_adds_an_adapter(register_plugin) -> None:
    class CustomAdapter(ArchitectureAdapter):
        """Claims models whose class is called Custom."""

        name = "custom"

        def matches(self, model):
            return type(model).__name__ == "Custom"

        def layout(self, model):  # pragma: no cover - not laid out here
            raise NotImplementedError

    Custom = type("Custom", (torch.nn.Module,), {})
    host = register_plugin(make_plugin(register_architectures=lambda register: register(CustomAdapter)), name="arch")
    assert host.architectures.get("custom").plugin == "arch"
    assert isinstance(host.adapter_for(Custom()), CustomAdapter)


# -- register_commands -------------------------------------------------------------------------
def test_register_commands_adds_a_command(register_plugin) -> None:
    @click.command()
    @click.argument("name")
    def hello(name: str) -> None:
        """Say hello."""
        click.echo(f"hello {name}")

    def register_commands(cli):
        cli.add_command(hello)

    host = register_plugin(make_plugin(register_commands=register_commands), name="greeter")
    group = click.Group("slimkit")
    host.pm.hook.register_commands(cli=group)
    assert "hello" in group.commands
    result = CliRunner().invoke(group, ["hello", "world"])
    assert result.exit_code == 0, result.output
    assert result.output == "hello world\n"


# -- config round trips ------------------------------------------------------------------------
def _registered_methods() -> list[Any]:
    host = make_host(load_entrypoints=False)
    return [
        pytest.param(info.family, info.name, id=f"{info.family}:{info.name}")
        for info in host.methods()
        if info.family != "architecture"
    ]


@pytest.mark.parametrize(("family", "name"), _registered_methods())
def test_default_config_round_trips(slimkit_host, family: str, name: str) -> None:
    info = slimkit_host.registry(family).get(name)
    config = slimkit_host.config(info, None)
    assert isinstance(config, MethodConfig) and config.model_config.get("frozen")
    stored = json.loads(json.dumps(serialise_config(info.name, info.version, config)))
    assert stored["type"] == name and stored["version"] == info.version
    resolved_info, resolved = slimkit_host.config_from_dict(family, stored)
    assert resolved_info == info
    assert resolved == config
    # A config written by another version of the method is refused, naming the plugin.
    with pytest.raises(ConfigError, match=rf"version {info.version + 1}.*{info.plugin}"):
        slimkit_host.config_from_dict(family, {**stored, "version": info.version + 1})


def test_a_third_party_config_round_trips(register_plugin) -> None:
    host = register_plugin(make_plugin(register_scorers=lambda register: register(ThresholdScorer)), name="mine")
    info = host.scorers.get("test.threshold")
    config = host.config(info, {"threshold": 0.25, "roles": ["up", "down"]})
    stored = json.loads(json.dumps(serialise_config(info.name, info.version, config)))
    assert stored == {"type": "test.threshold", "version": 3, "data": {"threshold": 0.25, "roles": ["up", "down"]}}
    assert host.config_from_dict("scorer", stored) == (info, config)


@pytest.mark.parametrize(
    ("stored", "error"),
    [
        pytest.param({"type": "magnitude", "data": {}}, ConfigError, id="no-version"),
        pytest.param(["magnitude", 1, {}], ConfigError, id="not-a-dict"),
        pytest.param({"type": "magnitude", "version": "1", "data": {}}, ConfigError, id="version-as-text"),
        pytest.param({"type": "magnitude", "version": 1, "data": {"bogus": 1}}, ConfigError, id="unknown-field"),
        pytest.param({"type": "no-such-scorer", "version": 1, "data": {}}, UnknownMethodError, id="unknown-type"),
    ],
)
def test_malformed_stored_configs_are_refused(slimkit_host, stored: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        slimkit_host.config_from_dict("scorer", stored)
