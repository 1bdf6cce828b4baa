"""Plugin loading tells the truth: broken plugins are listed with their error, names in
SLIMKIT_LOAD_PLUGINS/SLIMKIT_BLOCK_PLUGINS that match nothing are reported, and ``-p`` takes
parameters of dotted method names.

The listings are checked through the real console entry (``python -m slimkit``) in subprocesses
whose ``PYTHONPATH`` holds a folder of real distributions (each a module and a ``*.dist-info``
with an ``entry_points.txt``, which ``importlib.metadata`` finds as it finds pip's). ``-p`` is
checked in process, with throwaway plugins and click's CliRunner.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import Field

from slimkit.testing import write_distributions

from slimkit import BaseEvaluator, MethodConfig, Scores, hookimpl, make_host
from slimkit.core.cli import make_cli
from slimkit.core.errors import PluginError

DISTRIBUTIONS: dict[str, tuple[str, str]] = {
    # distribution name: (entry point name, module source)
    "slimkit-broken-plugin": ("broken", "import slimkit_dependency_that_is_not_installed\n"),
    "slimkit-raiser-plugin": (
        "raiser",
        """
        from slimkit import hookimpl

        @hookimpl
        def register_compressors(register):
            raise RuntimeError("raiser cannot register its compressors")
        """,
    ),
    "slimkit-typo-plugin": (
        "typo",
        """
        from slimkit import hookimpl

        @hookimpl
        def register_scorer(register):  # misspelled: the hook is register_scorers
            raise AssertionError("never called")
        """,
    ),
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
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of installed distributions: one module and one dist-info each, version 2.0."""
    return write_distributions(tmp_path_factory.mktemp("site"), DISTRIBUTIONS, "2.0")


def slimkit(site: Path, *args: str, **env_vars: str) -> subprocess.CompletedProcess:
    """``python -m slimkit ARGS`` with the site on PYTHONPATH and only the given SLIMKIT_* plugin variables."""
    env = {k: v for k, v in os.environ.items() if k not in ("SLIMKIT_LOAD_PLUGINS", "SLIMKIT_BLOCK_PLUGINS")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(Path(__file__).resolve().parents[1])])
    env.update(env_vars)
    return subprocess.run([sys.executable, "-m", "slimkit", *args], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.fixture(scope="module")
def listed(site: Path) -> dict[str, dict]:
    """``slimkit plugins --json`` on the site, by plugin name."""
    result = slimkit(site, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    return {entry["name"]: entry for entry in json.loads(result.stdout)}


@pytest.mark.slow
def test_plugins_json_lists_broken_plugins_with_their_error(listed: dict[str, dict]) -> None:
    assert set(listed) == {"broken", "raiser", "typo", "good"}
    broken = listed["broken"]
    assert (broken["status"], broken["distribution"], broken["version"], broken["hooks"]) == (
        "broken", "slimkit-broken-plugin", "2.0", [])
    [error] = broken["errors"]
    assert "'broken' (distribution slimkit-broken-plugin) failed to import" in error
    assert "slimkit_dependency_that_is_not_installed" in error
    [error] = listed["typo"]["errors"]
    assert listed["typo"]["status"] == "broken" and "register_scorer" in error
    # Registered, but its hook raised: loaded, with the error.
    raiser = listed["raiser"]
    assert (raiser["status"], raiser["source"], raiser["hooks"]) == ("partly loaded", "entrypoint",
                                                                    ["register_compressors"])
    [error] = raiser["errors"]
    assert "'raiser' raised in register_compressors" in error and "raiser cannot register" in error
    good = listed["good"]
    assert (good["status"], good["errors"], good["version"]) == ("ok", [], "2.0")
    # The keys that were there before are still there, with the same meaning.
    assert set(good) >= {"name", "version", "hooks", "source", "distribution"}


@pytest.mark.slow
def test_plugins_table_shows_status_and_each_problem_once(site: Path, listed: dict[str, dict]) -> None:
    result = slimkit(site, "plugins")
    assert result.returncode == 0, result.stderr
    cells = [[cell.strip() for cell in line.strip("│").split("│")]
             for line in result.stdout.splitlines() if line.startswith("│")]
    rows = {row[0]: row for row in cells}
    assert rows["broken"] == ["broken", "2.0", "slimkit-broken-plugin", "entrypoint", "broken", ""]
    assert rows["raiser"][4:] == ["partly loaded", "register_compressors"]
    assert rows["good"][4:] == ["ok", "register_evaluators"] and rows["typo"][4] == "broken"
    problems = [line.removeprefix("Problem: ") for line in result.stdout.splitlines() if line.startswith("Problem: ")]
    expected = [error for name in ("broken", "raiser", "typo") for error in listed[name]["errors"]]
    assert sorted(problems) == sorted(expected)
    assert "No third-party plugins installed" not in result.stdout
    assert result.stderr == ""  # every problem is in the table's notes, none repeated as a warning


@pytest.mark.slow
def test_unknown_load_and_block_names_are_reported(site: Path) -> None:
    result = slimkit(site, "plugins", "--json", SLIMKIT_LOAD_PLUGINS="nonexistent,good",
                     SLIMKIT_BLOCK_PLUGINS="typo,tpyo")
    assert result.returncode == 0, result.stderr
    entries = {entry["name"]: entry for entry in json.loads(result.stdout)}
    assert entries["good"]["status"] == "ok"
    assert entries["typo"]["status"] == "blocked" and entries["typo"]["errors"] == []
    assert (entries["broken"]["status"], entries["raiser"]["status"]) == ("not selected", "not selected")
    [load_error] = entries["nonexistent"]["errors"]
    assert entries["nonexistent"]["status"] == "not installed"
    assert entries["nonexistent"]["source"] == "SLIMKIT_LOAD_PLUGINS"
    assert load_error.startswith("SLIMKIT_LOAD_PLUGINS names 'nonexistent', which is not installed")
    for installed in ("good (slimkit-good-plugin)", "broken (slimkit-broken-plugin)"):
        assert installed in load_error  # the error lists what is installed
    [block_error] = entries["tpyo"]["errors"]
    assert block_error.startswith("SLIMKIT_BLOCK_PLUGINS names 'tpyo', which is not installed")
    assert "'typo'" not in block_error  # typo is installed, and blocked
    assert "\n" not in load_error + block_error


@pytest.mark.slow
def test_a_command_says_once_what_did_not_load(site: Path) -> None:
    result = slimkit(site, "methods", "--family", "evaluator", "--json", SLIMKIT_LOAD_PLUGINS="nonexistent")
    assert result.returncode == 0, result.stderr
    assert "good.constant" not in result.stdout and "perplexity" in result.stdout
    [line] = result.stderr.splitlines()
    assert line.startswith("Warning: SLIMKIT_LOAD_PLUGINS names 'nonexistent', which is not installed")
    # Without the variable, the plugins that did not load cleanly are named in one line.
    result = slimkit(site, "methods", "--family", "evaluator", "--json")
    assert result.returncode == 0, result.stderr
    assert "good.constant" in result.stdout
    [line] = result.stderr.splitlines()
    assert line.startswith("Warning: plugins that did not load cleanly:")
    assert all(f"{name} ({status})" in line for name, status in
               (("raiser", "partly loaded"), ("broken", "broken"), ("typo", "broken")))
    assert "slimkit plugins" in line


def test_empty_load_list_means_none_and_is_not_a_problem() -> None:
    host = make_host(only=[], block=[])
    assert host.problems == []
    assert all(info.status in ("ok", "not selected") for info in host.plugin_infos(unloaded=True))


def test_make_host_arguments_are_checked_like_the_variables() -> None:
    with pytest.warns(RuntimeWarning, match="make_host"):
        host = make_host(only=["nonexistent"], block=["slimkit.plugins.pruning.wanda", "slimkit.plugins.typo"])
    problems = [str(problem) for problem in host.problems]
    assert all(isinstance(problem, PluginError) for problem in host.problems)
    assert [p.split(",")[0] for p in problems] == ["make_host(only=...) names 'nonexistent'",
                                                   "make_host(block=...) names 'slimkit.plugins.typo'"]
    statuses = {info.name: info.status for info in host.plugin_infos(unloaded=True)}
    assert statuses["slimkit.plugins.pruning.wanda"] == "blocked" and "wanda" not in host.scorers
    assert statuses["nonexistent"] == statuses["slimkit.plugins.typo"] == "not installed"
    # Not loading entry points, the load list is not looked at: nothing to report there.
    quiet = make_host(load_entrypoints=False, only=["nonexistent"], block=[])
    assert quiet.problems == []


# -- a plugin that raises or registers something refused, in process --------------------------------
def test_a_raising_plugin_is_partly_loaded_and_a_refused_name_is_charged_to_its_plugin(register_plugin) -> None:
    class Plugin:
        @hookimpl
        def register_compressors(self, register):
            raise RuntimeError("boom")

        @hookimpl
        def register_evaluators(self, register):
            register(Echo)

    class Copycat(BaseEvaluator):
        """Takes a bundled evaluator's name."""

        name = "size"

        def evaluate(self, model, config, ctx):
            return {}

    class Second:
        @hookimpl
        def register_evaluators(self, register):
            register(Copycat)

    register_plugin(Plugin(), name="exploder")
    host = register_plugin(Second(), name="copycat")
    with pytest.warns(RuntimeWarning):
        infos = {info.name: info for info in host.plugin_infos(unloaded=True)}
    assert infos["exploder"].status == "partly loaded" and "boom" in infos["exploder"].errors[0]
    assert infos["copycat"].status == "partly loaded" and "'size'" in infos["copycat"].errors[0]
    assert infos["slimkit.plugins.evaluators.size"].status == "ok"
    assert "qa.top1" in host.evaluators  # the rest of the raising plugin still loaded


# -- -p with dotted method names ---------------------------------------------------------------------
class EchoConfig(MethodConfig):
    text: str = Field("", description="Text to measure.")
    scale: float = Field(1.0, description="Multiplies the length.")


class Echo(BaseEvaluator):
    """The length of ``text`` times ``scale``."""

    name = "qa.top1"
    Config = EchoConfig

    def evaluate(self, model, config, ctx):
        return {"length": len(config.text) * config.scale}


class ShortEcho(Echo):
    """A second evaluator whose name is a prefix of the first's."""

    name = "qa"


@pytest.fixture
def qa_cli(register_plugin):
    class Plugin:
        @hookimpl
        def register_evaluators(self, register):
            register(Echo)
            register(ShortEcho)

    host = register_plugin(Plugin(), name="qa")
    assert host.problems == []
    return make_cli(host)


def run_cli(cli, *args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_eval_params_of_dotted_evaluator_names(qa_cli) -> None:
    result = run_cli(qa_cli, "eval", "example:stories260K", "--metric", "qa.top1", "--metric", "qa",
                     "-p", "qa.top1.text=hello", "-p", "qa.top1:scale=3", "-p", "qa.text=hi", "--json",
                     "--no-record")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["metrics"]
    assert metrics == {"qa.top1": {"length": 15.0}, "qa": {"length": 2.0}}  # longest prefix wins


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("qa.text=x", "--param 'qa.text=x' names none of the evaluators being run (qa.top1)"),
        ("top1:text=x", "--param 'top1:text=x' is for 'top1', which is not among the evaluators being run (qa.top1)"),
        ("qa.top1", "--param takes METRIC.FIELD=VALUE or METRIC:FIELD=VALUE, got 'qa.top1'"),
        ("qa.top1.=x", "--param 'qa.top1.=x' has no valid FIELD for evaluator 'qa.top1'"),
        ("qa.top1.text.more=x", "has no valid FIELD for evaluator 'qa.top1'"),
    ],
)
def test_eval_param_mistakes_are_one_line_before_the_model_loads(qa_cli, param: str, message: str) -> None:
    # The model does not exist: the parameter is refused before anything tries to load it.
    result = CliRunner().invoke(qa_cli, ["eval", "./no/such/model", "--metric", "qa.top1", "-p", param])
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: ") and message in line


def test_score_params_of_a_dotted_scorer_name(tmp_path: Path) -> None:
    cli = make_cli(make_host(load_entrypoints=False))
    out = tmp_path / "scores.safetensors"
    result = run_cli(cli, "score", "example:stories260K", "-s", "neurons.taylor", "-p", "aggregate=vector",
                     "-p", "neurons.taylor.batch_size=2", "--samples", "2", "--seq-len", "32", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert Scores.load(out).config == {"aggregate": "vector", "batch_size": 2}
    bad = CliRunner().invoke(cli, ["score", "example:stories260K", "-s", "neurons.magnitude", "-p",
                                   "neurons.magnitude.bogus=1", "-o", str(tmp_path / "x")])
    assert bad.exit_code == 1 and not (tmp_path / "x").exists()
    [line] = bad.stderr.splitlines()
    assert "neurons.magnitude" in line and "bogus" in line and "'neurons'" not in line
