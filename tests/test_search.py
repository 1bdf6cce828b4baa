"""Sweeps and searches (issue 18): the space, the goals, trials as a tree of recorded steps, the
catalogue as memory, executors, the CLI and its bad input. Real runs on the bundled stories260K."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

import slimkit
from slimkit import BaseCompressor, CompressionSummary, hookimpl
from slimkit.core.cli import make_cli
from slimkit.core.config import MethodConfig
from slimkit.core.evaluation import evaluate_model
from slimkit.core.model_io import load_model
from slimkit.core.search import Budget, SearchError, SearchSpec, prepare, run_search, run_sweep
from slimkit.core.search.goals import build_goals
from slimkit.core.search.space import build_space
from slimkit.core.search.trials import nondominated
from tests.backends import free_port

MODEL = "example:stories260K"
EVAL = [{"metric": "perplexity", "params": {"max_windows": 2, "seq_len": 64}}]


def spec_of(steps: list[dict], **extra: Any) -> SearchSpec:
    data = {"name": "t", "calibration": {"n_samples": 8, "seq_len": 32}, "steps": steps, "evaluate": EVAL,
            "objectives": ["minimize perplexity", "minimize size"], **extra}
    return SearchSpec.from_data(data)


PRUNE_THEN_QUANT = [{"method": "prune.unstructured", "params": {"sparsity": [0.3, 0.5]}},
                    {"method": "quantize.rtn", "params": {"bits": [4, 8], "group_size": 4}}]


# two trials sharing their first step: the smallest space that shows a step run once for two trials
SHARED_FIRST = [{"method": "prune.unstructured", "params": {"sparsity": 0.3}},
                {"method": "quantize.rtn", "params": {"bits": [4, 8], "group_size": 4}}]


def rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        return connection.execute(sql).fetchall()


# -- the space --------------------------------------------------------------------------------
def test_lists_choices_ranges_optional_steps_and_orders_make_the_grid(host: Any) -> None:
    spec = spec_of([
        {"method": ["prune.unstructured", "prune.sparsegpt"], "params": {"sparsity": {"range": [0.2, 0.4], "step": 0.1},
                                                                         "roles": ["q", "k"]},
         "optional": True},
        {"method": "quantize.rtn", "params": {"bits": {"choice": [4, 8]}}},
    ], order="any")
    space = build_space(spec, host)
    names = {d.name: d for d in space.dimensions()}
    assert set(names) == {"order", "step1.present", "step1.method", "step1.sparsity", "step2.bits"}
    assert names["step1.sparsity"].grid() == [0.2, 0.3, 0.4]
    assert space.steps[0].fixed == {"roles": ["q", "k"]}  # a list the field takes as it is: not a choice
    points = list(space.grid())
    # 2 orders x (absent + 2 methods x 3 sparsities) x 2 bits
    assert len(points) == 2 * (1 + 2 * 3) * 2
    assert len({json.dumps(p, sort_keys=True) for p in points}) == len(points)
    absent = next(p for p in points if not p["step1.present"])
    assert [s.method for s in space.recipe(absent).steps] == ["quantize.rtn"]
    turned = next(p for p in points if p["order"] == "step2>step1" and p["step1.present"])
    assert [s.method for s in space.recipe(turned).steps] == ["quantize.rtn", turned["step1.method"]]


def test_a_param_applies_to_the_methods_of_the_step_that_have_it(host: Any) -> None:
    spec = spec_of([{"method": ["prune.unstructured", "prune.sparsegpt"],
                     "params": {"sparsity": [0.3, 0.5], "scorer": "wanda", "sequential": [True, False]}}])
    space = build_space(spec, host)
    recipes = [space.recipe(p).steps[0] for p in space.grid()]
    assert len(recipes) == 2 * 2 + 2  # unstructured: sparsity x sequential; sparsegpt: sparsity only
    assert all(r.params.get("scorer") == "wanda" for r in recipes if r.method == "prune.unstructured")
    assert all(set(r.params) == {"sparsity"} for r in recipes if r.method == "prune.sparsegpt")
    for point in space.grid():  # every one valid, and back from what it records
        planned = space.recipe(point).resolve(host).planned()
        chain = [(axes, p.info.name) for axes, p in zip(space.active(point), planned)]
        assert space.point_of(chain, [p.serial["data"] for p in planned]) == point
    with pytest.raises(SearchError, match="no method of the step .* has the field 'sparsty'"):
        build_space(spec_of([{"method": ["prune.unstructured", "prune.sparsegpt"], "params": {"sparsty": 0.5}}]), host)


def test_a_recorded_chain_maps_back_to_its_point(host: Any) -> None:
    space = build_space(spec_of(PRUNE_THEN_QUANT), host)
    for point in space.grid():
        planned = space.recipe(point).resolve(host).planned()
        chain = [(axes, p.info.name) for axes, p in zip(space.active(point), planned)]
        assert space.point_of(chain, [p.serial["data"] for p in planned]) == point
    planned = space.recipe(next(space.grid())).resolve(host).planned()
    data = [dict(p.serial["data"]) for p in planned]
    data[0]["sparsity"] = 0.4  # a value outside the space: not a point of it
    assert space.point_of([(s, p.info.name) for s, p in zip(space.steps, planned)], data) is None


def test_malformed_spaces_list_every_problem(host: Any) -> None:
    with pytest.raises(SearchError) as caught:
        build_space(spec_of([{"method": "prune.nope", "params": {}},
                             {"method": "quantize.rtn", "params": {"bits": {"range": [8, 2]}}}]), host)
    text = str(caught.value)
    assert "2 problems" in text and "prune.nope" in text and "low end 8 is not below its high end 2" in text
    with pytest.raises(SearchError, match="a sweep needs a 'step'"):
        list(build_space(spec_of([{"method": "prune.unstructured", "params": {"sparsity": {"range": [0.1, 0.5]}}}]),
                         host).grid())
    with pytest.raises(SearchError, match="malformed YAML at line 3.*flow sequence at line 2"):
        SearchSpec.from_yaml("steps:\n  - method: [a\n")


# -- goals -------------------------------------------------------------------------------------
def test_a_goal_naming_a_metric_no_evaluator_produces_is_refused_naming_what_they_produce(host: Any) -> None:
    spec = spec_of(PRUNE_THEN_QUANT, constraints=["accuracy >= 0.5"])
    with pytest.raises(SearchError) as caught:
        build_goals(spec, host, build_space(spec, host))
    assert "no evaluator of this file produces the metric 'accuracy'" in str(caught.value)
    assert "perplexity: perplexity, nll, tokens, windows" in str(caught.value)
    spec = spec_of(PRUNE_THEN_QUANT, constraints=["size <= 0.3 x base", "perplexity <= 1.1 x base",
                                                  "step1.sparsity >= 0.4"])
    goals = build_goals(spec, host, build_space(spec, host))
    assert [o.key for o in goals.objectives] == ["perplexity.perplexity", "size"]
    size, ppl, sparsity = goals.constraints
    assert size.relative and size.bound({"size": 1000.0}) == pytest.approx(300.0)
    assert ppl.holds(10.9, {"perplexity.perplexity": 10.0}) and not ppl.holds(11.2, {"perplexity.perplexity": 10.0})
    assert ppl.violation(11.0, {"perplexity.perplexity": 10.0}) == 0.0 < ppl.violation(12.0, {"perplexity.perplexity": 10.0})
    assert sparsity.on_space and goals.space_allows({"step1.sparsity": 0.3}) is sparsity


def test_nondominated_keeps_exactly_the_front() -> None:
    points = [(1.0, 5.0), (2.0, 2.0), (3.0, 3.0), (5.0, 1.0), (2.0, 2.0), (4.0, 1.0)]
    assert nondominated(points) == [0, 1, 4, 5]


def test_a_space_with_no_valid_combination_names_the_constraint_before_any_work(host: Any, tmp_path: Path) -> None:
    spec = spec_of(PRUNE_THEN_QUANT, constraints=["step1.sparsity >= 0.6"])
    with pytest.raises(SearchError) as caught:
        run_sweep(spec, MODEL, catalogue=str(tmp_path / "c.db"), host=host)
    assert "no valid combination" in str(caught.value)
    assert "'step1.sparsity >= 0.6' excludes 4 of 4 (step1.sparsity takes 0.3, 0.5)" in str(caught.value)
    assert not (tmp_path / "c.db").exists()  # nothing opened, nothing run
    # refused by the model itself (a group size that divides none of its layers): checked before any trial
    spec = spec_of([{"method": "quantize.rtn", "params": {"bits": [4, 8], "group_size": 32}}])
    with pytest.raises(SearchError, match="2 of 2 refused: .*group_size 32 does not divide"):
        run_sweep(spec, MODEL, catalogue=str(tmp_path / "d.db"), host=host)
    assert rows(tmp_path / "d.db", "select count(*) from steps") == [(0,)]


# -- sweeps ------------------------------------------------------------------------------------
def test_a_sweep_runs_shared_steps_once_and_the_second_takes_everything_from_the_catalogue(
        host: Any, tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    spec = spec_of(PRUNE_THEN_QUANT, constraints=["size <= 0.5 x base"])
    first = run_sweep(spec, MODEL, catalogue=str(db), host=host)
    assert [t.status for t in first.trials] == ["done"] * 4
    assert (first.steps_run, first.steps_shared) == (6, 2)  # 2 pruning + 4 quantizing steps; 2 prunings shared
    assert rows(db, "select count(*) from steps where method = 'prune.unstructured'") == [(2,)]
    # each trial's metrics are its model's, measured directly
    trial = first.trials[1]
    direct = evaluate_model(load_model(trial.location), {"perplexity": EVAL[0]["params"]}, host=host, catalogue=False)
    assert trial.metrics["perplexity.perplexity"] == pytest.approx(direct["perplexity"]["perplexity"], rel=1e-6)
    assert trial.metrics["size"] < 0.5 * first.base_metrics["size"]
    # the front is the feasible trials no other dominates
    table = [(t.metrics["perplexity.perplexity"], t.metrics["size"]) for t in first.trials]
    assert sorted(t.number for t in first.front) == sorted(i + 1 for i in nondominated(table))
    second = run_sweep(spec, MODEL, catalogue=str(db), host=host)
    assert [t.status for t in second.trials] == ["catalogue"] * 4
    assert (second.steps_run, sum(t.evaluations_run for t in second.trials)) == (0, 0)
    assert {t.model_id for t in second.front} == {t.model_id for t in first.front}


class FragileConfig(MethodConfig):
    fail: bool = Field(False, description="Raise instead of compressing.")


class FragileCompressor(BaseCompressor):
    """Stands for a plugin with a bug on some inputs."""

    name = "test.fragile"
    Config = FragileConfig

    def compress_(self, model: Any, adapter: Any, config: Any, ctx: Any) -> Any:
        if config.fail:
            raise RuntimeError("the plugin's own bug")
        return CompressionSummary("nothing changed")


class FragilePlugin:
    @hookimpl
    def register_compressors(self, register: Any) -> None:
        register(FragileCompressor)


def test_a_trial_that_raises_is_recorded_failed_and_the_sweep_goes_on(register_plugin: Any, tmp_path: Path) -> None:
    host = register_plugin(FragilePlugin(), name="fragile")
    db = tmp_path / "c.db"
    spec = spec_of([{"method": "test.fragile", "params": {"fail": [True, False]}},
                    {"method": "quantize.rtn", "params": {"bits": 8, "group_size": 4}}])
    result = run_sweep(spec, MODEL, catalogue=str(db), host=host)
    failed, done = result.trials
    assert (failed.status, done.status) == ("failed", "done")
    assert "RuntimeError: the plugin's own bug" in failed.error and "test.fragile" in failed.error
    assert rows(db, "select status from runs where error like '%own bug%'") == [("failed",)]
    assert [t.number for t in result.front] == [2]


def test_a_pool_worker_that_dies_loses_only_its_task_which_is_retried_once(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    killed: list[int] = []

    def kill_the_workers(event: Any) -> None:
        # at a trial's first progress: the worker running its first step dies, and so does the idle one
        if event.kind == "progress" and event.trial.number >= 1 and not killed:
            for victim in multiprocessing.active_children():
                killed.append(victim.pid)
                os.kill(victim.pid, signal.SIGKILL)

    result = run_sweep(spec_of(SHARED_FIRST), MODEL, catalogue=str(db), executor="pool", workers=2,
                       on_event=kill_the_workers)
    assert len(killed) == 2
    assert [t.status for t in result.trials] == ["done"] * 2
    assert any(t.retried for t in result.trials)
    assert rows(db, "select count(*) from steps where method = 'prune.unstructured'") == [(1,)]
    # the killed task's run is marked failed (by the next worker opening the catalogue); the rest are done
    assert rows(db, "select count(*) from runs where status = 'failed' and error like 'the process ended%'") == [(1,)]
    assert rows(db, "select count(*) from runs where status = 'running'") == [(0,)]


def test_pool_workers_record_into_one_postgresql_catalogue(pg_database: str) -> None:
    from slimkit.core.catalogue import Catalogue

    Catalogue(pg_database, upgrade=True).close()  # a server catalogue is created on request
    result = run_sweep(spec_of(SHARED_FIRST), MODEL, catalogue=pg_database, executor="pool", workers=2)
    assert [t.status for t in result.trials] == ["done"] * 2 and result.steps_run == 3
    with Catalogue(pg_database) as cat:
        assert {t.model_id for t in result.trials} <= {m.id for m in cat.models()}
        pruned = [s for m in cat.models() for s in cat.steps_into(m.id) if s.method == "prune.unstructured"]
        assert len(pruned) == 1  # once, though two workers ran trials needing it
    again = run_sweep(spec_of(SHARED_FIRST), MODEL, catalogue=pg_database)
    assert again.counts["catalogue"] == 2


# -- searches ----------------------------------------------------------------------------------
SEARCH_STEPS = [{"method": "prune.unstructured", "params": {"sparsity": {"range": [0.1, 0.6], "step": 0.1}},
                 "optional": True},
                {"method": "quantize.rtn", "params": {"bits": [4, 8], "group_size": 4}}]


def test_a_second_search_starts_from_the_first_and_repeats_no_trial(host: Any, tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    spec = spec_of(SEARCH_STEPS, constraints=["perplexity <= 3 x base"], proxy={"perplexity": {"max_windows": 1}})
    first = run_search(spec, MODEL, catalogue=str(db), host=host, budget=Budget(trials=3), seed=1)
    assert first.counts["done"] == 3 and first.front
    assert all(t.full_metrics for t in first.front)  # the front evaluated fully after the cheap proxy
    assert all(t.full_metrics["perplexity.windows"] == 2 and t.metrics["perplexity.windows"] == 1 for t in first.front)
    second = run_search(spec, MODEL, catalogue=str(db), host=host, budget=Budget(trials=3), seed=2)
    recalled = [t for t in second.trials if t.status == "catalogue"]
    assert len(recalled) == 3 and second.counts["done"] == 3
    points = [json.dumps(t.point, sort_keys=True) for t in second.trials]
    assert len(set(points)) == len(points)
    steps_before = rows(db, "select count(*) from steps")[0][0]
    assert steps_before == first.steps_run + second.steps_run


def test_nsga2_and_random_samplers_search_too(host: Any, tmp_path: Path) -> None:
    for sampler in ("nsga2", "random"):
        result = run_search(spec_of(SEARCH_STEPS), MODEL, catalogue=str(tmp_path / f"{sampler}.db"), host=host,
                            budget=Budget(trials=2), sampler=sampler)
        assert result.counts["done"] == 2 and result.front


def test_a_search_needs_objectives_and_a_budget(host: Any) -> None:
    with pytest.raises(SearchError, match="needs a budget"):
        run_search(spec_of(SEARCH_STEPS), MODEL, host=host)
    with pytest.raises(SearchError, match="at least one objective"):
        prepare(spec_of(SEARCH_STEPS, objectives=[]), host, "search")
    assert Budget.parse("trials=5,time=2m").seconds == 120.0
    with pytest.raises(slimkit.SlimkitError, match="cannot read the budget"):
        Budget.parse("5 trials")


def test_stop_returns_what_is_done(host: Any, tmp_path: Path) -> None:
    finished: list[Any] = []
    result = run_sweep(spec_of(PRUNE_THEN_QUANT), MODEL, catalogue=str(tmp_path / "c.db"), host=host,
                       on_event=lambda e: finished.append(e) if e.kind == "done" else None,
                       stop=lambda: bool(finished))
    assert result.stopped == "stopped on request"
    assert 1 <= result.counts["done"] < 4


# -- the command line --------------------------------------------------------------------------
SWEEP_YAML = """
name: cli-sweep
calibration: {n_samples: 8, seq_len: 32}
steps:
  - method: prune.unstructured
    params: {sparsity: [0.3, 0.5]}
  - method: quantize.rtn
    params: {bits: [4, 8], group_size: 4}
evaluate:
  - metric: perplexity
    params: {max_windows: 2, seq_len: 64}
objectives: [minimize perplexity, minimize size]
constraints: [size <= 0.5 x base]
"""


def invoke(*args: str) -> Any:
    from click.testing import CliRunner

    return CliRunner().invoke(make_cli(slimkit.make_host(load_entrypoints=False)), list(args))


def test_cli_sweep_prints_the_table_and_front_and_draws_the_plot(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(SWEEP_YAML)
    db, plot = tmp_path / "c.db", tmp_path / "front.png"
    result = invoke("--catalogue", str(db), "sweep", str(tmp_path / "s.yaml"), "-m", MODEL, "--plot", str(plot))
    assert result.exit_code == 0, result.output
    assert "4 trials: 4 run, 0 from the catalogue" in result.output and "2 shared between trials" in result.output
    assert "front (minimize perplexity.perplexity; minimize size): #" in result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = invoke("--catalogue", str(db), "sweep", str(tmp_path / "s.yaml"), "-m", MODEL, "--json")
    data = json.loads(again.output)
    assert data["counts"]["catalogue"] == 4 and data["steps"]["run"] == 0


@pytest.mark.parametrize("args, expected", [
    (["--plot", "/nonexistent/x.png"], "--plot /nonexistent/x.png: no such folder /nonexistent"),
    (["--executor", "ray", "--address", "127.0.0.1:{port}"], "the Ray cluster at 127.0.0.1:{port} does not answer"),
])
def test_cli_bad_input_is_one_line_before_any_work(tmp_path: Path, args: list[str], expected: str) -> None:
    pytest.importorskip("ray") if "ray" in args else None
    (tmp_path / "s.yaml").write_text(SWEEP_YAML)
    port = str(free_port())
    result = invoke("--catalogue", str(tmp_path / "c.db"), "sweep", str(tmp_path / "s.yaml"), "-m", MODEL,
                    *[a.format(port=port) for a in args])
    assert result.exit_code == 1
    assert expected.format(port=port) in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "c.db").exists() or rows(tmp_path / "c.db", "select count(*) from steps") == [(0,)]


def test_cli_dry_run_shows_the_bundled_example_space_and_runs_nothing(tmp_path: Path) -> None:
    result = invoke("--catalogue", str(tmp_path / "c.db"), "sweep", "example:prune-quantize", "-m", MODEL,
                    "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["points"] == (1 + 2 * 2) * 2 and data["refused"] == []  # (absent, or 2 methods x 2 sparsities) x 2 bits
    assert [d["name"] for d in data["dimensions"]] == ["step1.present", "step1.method", "step1.sparsity", "step2.bits"]
    assert not (tmp_path / "c.db").exists()
    result = invoke("search", "example:nope", "-m", MODEL, "--dry-run")
    assert result.exit_code == 1 and "bundled: prune-quantize" in result.output


def test_cli_unknown_metric_and_missing_file_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(SWEEP_YAML.replace("size <= 0.5 x base", "accuracy >= 0.5"))
    result = invoke("search", str(tmp_path / "s.yaml"), "-m", MODEL, "--budget", "trials=2")
    assert result.exit_code == 1 and "no evaluator of this file produces the metric 'accuracy'" in result.output
    result = invoke("sweep", str(tmp_path / "nope.yaml"), "-m", MODEL)
    assert result.exit_code == 1 and "no such sweep or search file" in result.output


@pytest.mark.slow
def test_ctrl_c_keeps_finished_trials_and_the_same_command_resumes(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(SWEEP_YAML)  # 4 trials: interrupted with 3 to go
    command = [sys.executable, "-m", "slimkit", "--catalogue", str(tmp_path / "c.db"), "sweep",
               str(tmp_path / "s.yaml"), "-m", MODEL]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if line.startswith("trial 1 done"):
            process.send_signal(signal.SIGINT)
            break
    _, rest = process.communicate(timeout=120)
    assert process.returncode == 130, "".join(lines) + rest
    assert "Interrupted: 1 finished trial(s) are in the catalogue" in rest
    again = subprocess.run(command + ["--json"], capture_output=True, text=True, timeout=300)
    data = json.loads(again.stdout)
    assert data["counts"]["catalogue"] >= 1 and data["counts"]["done"] + data["counts"]["catalogue"] == 4


@pytest.mark.slow
def test_trials_on_a_local_ray_cluster_write_to_the_same_catalogue(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    ray_bin = Path(sys.executable).with_name("ray")
    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    started = subprocess.run([str(ray_bin), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                              "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"],
                             capture_output=True, text=True, env=env, timeout=180)
    assert started.returncode == 0, started.stderr
    try:
        db = tmp_path / "c.db"
        begun = time.monotonic()
        result = run_sweep(spec_of(SHARED_FIRST), MODEL, catalogue=str(db), executor="ray",
                           address=f"127.0.0.1:{port}", workers=2)
        assert [t.status for t in result.trials] == ["done"] * 2, [t.error for t in result.trials]
        assert rows(db, "select count(*) from steps where method = 'prune.unstructured'") == [(1,)]
        assert all(Path(t.location, "config.json").is_file() for t in result.trials)
        assert math.isfinite(result.trials[0].metrics["perplexity.perplexity"])
        assert time.monotonic() - begun < 300
    finally:
        subprocess.run([str(ray_bin), "stop", "--force"], capture_output=True, env=env, timeout=120)
