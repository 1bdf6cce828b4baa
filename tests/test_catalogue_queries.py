"""Catalogue queries: lineage, descendants, where-filters, diff, Pareto fronts and graph renderers,
on SQLite and on PostgreSQL."""

from __future__ import annotations

import itertools
import json
import math
import random
import re
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

import slimkit
from slimkit.core.catalogue import Catalogue, CatalogueError, ModelEntry, StepEntry
from slimkit.core.catalogue import queries as q
from slimkit.core.present.lineage import lineage_dot, lineage_mermaid

CHAIN = [
    {"method": "prune.unstructured", "params": {"sparsity": 0.2}},
    {"method": "prune.unstructured", "params": {"sparsity": 0.4}, "seed": 3},
    {"method": "prune.unstructured", "params": {"sparsity": 0.6, "scope": "row"}},
]


def mid(n: int | str) -> str:
    """A model id from a small number or a hex prefix."""
    digits = format(n, "x") if isinstance(n, int) else n
    return "sha256:" + digits.ljust(64, "0")


def add_step(cat: Catalogue, step_id: str, parents: list[tuple[str, str]], child: str, sparsity: float = 0.5,
             seed: int = 0, method: str = "prune.unstructured") -> None:
    """Record one hand-made step between models that are already recorded."""
    with cat.session() as session, session.begin():
        cat.record_step(StepEntry(
            id=step_id, child_id=child, parents=tuple(parents), method=method, family="compressor",
            config={"type": method, "version": 1, "data": {"sparsity": sparsity}}, plugin="test",
            plugin_version=None, versions={}, seed=seed,
        ), None, session)


@pytest.fixture(scope="module")
def chain(tmp_path_factory, module_catalogue_url):
    """Real runs on stories260K: a 3-step chain, a sibling of its last model, a second branch
    from the base, and a sparsity-0 step whose child is its own parent."""
    tmp = tmp_path_factory.mktemp("chain")
    host = slimkit.make_host(load_entrypoints=False)
    cat = Catalogue(module_catalogue_url)

    def run(steps, out, name=None):
        recipe = slimkit.Recipe.from_data({"steps": steps, "evaluate": [{"metric": "size"}]})
        return slimkit.run_recipe(recipe, "example:stories260K", out=tmp / out if out else None, host=host,
                                  catalogue=cat, name=name)

    first = run(CHAIN, "chain3", "chain3")
    sibling = run([*CHAIN[:2], {"method": "prune.unstructured", "params": {"sparsity": 0.7, "scope": "row"}}],
                  "sibling", "sibling")
    half = run([{"method": "prune.unstructured", "params": {"sparsity": 0.5}, "seed": 1}], "half", "half")
    noop = run([{"method": "prune.unstructured", "params": {"sparsity": 0.0}}], None)
    yield SimpleNamespace(cat=cat, first=first, sibling=sibling, half=half, noop=noop,
                          base=first.steps[0].parent_id)
    cat.close()


# -- lineage ---------------------------------------------------------------------------------
def test_lineage_of_a_three_step_chain_reads_back_exactly(chain):
    steps = q.lineage(chain.cat, chain.first.provenance["content_id"])
    recorded = chain.first.steps
    assert [s.id for s in steps] == [r.step_id for r in recorded]
    assert [s.method for s in steps] == ["prune.unstructured"] * 3
    assert [s.config for s in steps] == [r.config for r in recorded]
    assert [s.config["data"]["sparsity"] for s in steps] == [0.2, 0.4, 0.6]
    assert steps[2].config["data"]["scope"] == "row"
    assert [s.seed for s in steps] == [0, 3, 0]
    assert steps[0].input_id == chain.base  # the base first
    assert [s.parents for s in steps] == [((r.parent_id, "input"),) for r in recorded]
    assert [s.child_id for s in steps] == [r.child_id for r in recorded]
    for earlier, later in zip(steps, steps[1:]):
        assert earlier.child_id == later.input_id
    assert steps[-1].child_id == chain.first.provenance["content_id"]
    models, same = q.lineage_models(chain.cat, "chain3")
    assert same == steps
    assert [m.id for m in models] == [chain.base, *(s.child_id for s in steps)]
    assert models[0].source == "example:stories260K" and models[-1].name == "chain3"


def test_lineage_of_a_base_is_empty_even_with_a_step_that_changed_nothing(chain):
    noop = chain.noop.steps[0]
    assert noop.parent_id == noop.child_id == chain.base  # sparsity 0: the child is its own parent
    assert q.lineage(chain.cat, chain.base) == []
    assert q.lineage(chain.cat, chain.base[7:15]) == []  # an id prefix works too


def test_lineage_json_is_the_chain_with_models(chain):
    data = json.loads(json.dumps(q.lineage_json(chain.cat, "chain3")))
    assert data["base"]["id"] == chain.base and data["model"]["name"] == "chain3"
    assert [m["id"] for m in data["models"]][1:] == [s["child_id"] for s in data["steps"]]
    assert data["steps"][1]["seed"] == 3 and data["steps"][0]["parents"] == [{"model_id": chain.base, "role": "input"}]


def test_lineage_and_descendants_survive_cycles(catalogue_url):
    cat = Catalogue(catalogue_url)
    for n in (1, 2, 3):
        cat.record_model(mid(n), "Toy")
    add_step(cat, mid("a1"), [(mid(1), "input")], mid(1), sparsity=0.0)  # self-loop, recorded first
    add_step(cat, mid("a2"), [(mid(1), "input")], mid(2))
    add_step(cat, mid("a3"), [(mid(2), "input")], mid(1))  # and a two-model cycle back
    add_step(cat, mid("a4"), [(mid(2), "input")], mid(3))
    assert [s.id for s in q.lineage(cat, mid(3))] == [mid("a2"), mid("a4")]
    assert [s.id for s in q.lineage(cat, mid(2))] == [mid("a2")]
    assert [s.id for s in q.lineage(cat, mid(1))] == [mid("a3")]  # 2 -> 1, then 1 <- 2 is already visited
    tree = q.descendants(cat, mid(1))
    assert [n.model.id for n in tree.walk()] == [mid(1), mid(2), mid(3)]
    assert lineage_dot(cat, mid(3)).count("->") == 2


def test_unknown_model_is_an_error(chain):
    with pytest.raises(CatalogueError, match="no model with id or name"):
        q.lineage(chain.cat, "abcdef0123")
    with pytest.raises(CatalogueError, match="no model named"):
        q.descendants(chain.cat, "no-such-model")


# -- descendants and diff ----------------------------------------------------------------------
def test_two_branches_from_one_base_appear_in_descendants(chain):
    tree = q.descendants(chain.cat, chain.base)
    assert tree.model.id == chain.base and tree.step is None
    first_steps = {child.model.id: child.step.config["data"]["sparsity"] for child in tree.children}
    assert first_steps == {chain.first.steps[0].child_id: 0.2, chain.half.provenance["content_id"]: 0.5}
    labels = [n.model.label for n in tree.walk()]
    assert len(labels) == len(set(labels)) == 6  # base, two chain models, chain3, sibling, half
    assert {"chain3", "sibling", "half"} <= set(labels)
    middle = next(n for n in tree.walk() if n.model.id == chain.first.steps[1].child_id)
    assert sorted(c.model.label for c in middle.children) == ["chain3", "sibling"]
    as_json = json.loads(json.dumps(tree.to_dict()))
    assert {c["step"]["config"]["sparsity"] for c in as_json["children"]} == {0.2, 0.5}
    assert q.descendants(chain.cat, "chain3").children == ()


def test_diff_of_two_siblings(chain):
    result = json.loads(json.dumps(q.diff(chain.cat, "chain3", "sibling")))
    assert result["same_base"] and result["base_a"] == result["base_b"] == chain.base
    assert [row["same"] for row in result["steps"]] == [True, True, False]
    last = result["steps"][2]
    assert (last["a"]["config"]["sparsity"], last["b"]["config"]["sparsity"]) == (0.6, 0.7)
    assert last["a"]["parent_id"] == last["b"]["parent_id"] == chain.first.steps[1].child_id
    assert last["a"]["seed"] == 0 and "calibration_fingerprint" in last["a"]
    metrics = {row["metric"]: row for row in result["metrics"]}
    sparsity = metrics["size.sparsity"]
    assert sparsity["a"] == chain.first.after["size"]["sparsity"]
    assert sparsity["b"] == chain.sibling.after["size"]["sparsity"]
    assert sparsity["change"] == pytest.approx(sparsity["b"] - sparsity["a"]) and sparsity["change"] > 0
    assert metrics["size.params"]["change"] == 0 and metrics["size.params"]["ratio"] == 1
    other = q.diff(chain.cat, "chain3", "half")
    assert [row["same"] for row in other["steps"]] == [False, False, False]
    assert other["steps"][1]["b"] is None and other["steps"][0]["b"]["seed"] == 1


# -- filters ---------------------------------------------------------------------------------
@pytest.fixture
def measured(catalogue_url):
    """Hand-recorded models with exact metrics."""
    cat = Catalogue(catalogue_url)
    table = [  # n, architecture, size, perplexity, sparsity, disk bytes
        (1, "Llama", 4_000_000, 10.0, 0.0, 4.1e6),
        (2, "Llama", 2_000_000, 20.0, 0.5, 2.0e6),
        (3, "Llama", 1_000_000, 35.0, 0.75, 1.1e6),
        (4, "GPT2", 2_000_000, 25.0, 0.5, 2.1e6),
    ]
    for n, arch, size, ppl, sparsity, disk in table:
        cat.record_model(mid(n), arch, size_bytes=size, params=size // 4, name=f"m{n}")
        cat.record_evaluations(mid(n), "perplexity", 1, {"perplexity": ppl, "nll": math.log(ppl)})
        cat.record_evaluations(mid(n), "size", 1, {"sparsity": sparsity, "disk_bytes": disk})
    cat.record_evaluations(mid(3), "perplexity", 1, {"perplexity": 30.0})  # a later value wins
    add_step(cat, mid("b2"), [(mid(1), "input")], mid(2))
    add_step(cat, mid("b3"), [(mid(2), "input")], mid(3), method="quant.toy")
    return cat


def names(models: list[ModelEntry]) -> list[str | None]:
    return [m.name for m in models]


@pytest.mark.parametrize("where, expected", [
    (["perplexity.perplexity<30"], ["m1", "m2", "m4"]),
    (["perplexity.perplexity<=30"], ["m1", "m2", "m3", "m4"]),
    (["size.disk_bytes<=2e6"], ["m2", "m3"]),
    (["sparsity>0.4"], ["m2", "m3", "m4"]),
    (["sparsity = 0.5"], ["m2", "m4"]),
    (["sparsity!=0.5"], ["m1", "m3"]),
    (["sparsity>=0.5", "perplexity<25"], ["m2"]),
    (["size<2000000"], ["m3"]),  # the model column
    (["params>600000"], ["m1"]),
    (["nll>3"], ["m3", "m4"]),
])
def test_where_filters(measured, where, expected):
    assert names(q.filter_models(measured, where=where)) == expected


def test_filters_by_method_and_architecture(measured):
    assert names(q.filter_models(measured, method="quant.toy")) == ["m3"]
    assert names(q.filter_models(measured, method="prune.unstructured", where=["sparsity>0.1"])) == ["m2"]
    assert names(q.filter_models(measured, architecture="GPT2")) == ["m4"]
    assert names(q.filter_models(measured)) == ["m1", "m2", "m3", "m4"]


def test_bad_where_conditions(measured):
    with pytest.raises(CatalogueError, match=r"unknown metric 'accuracy'.*perplexity\.nll, perplexity\.perplexity"):
        q.filter_models(measured, where=["accuracy>0.5"])
    with pytest.raises(CatalogueError, match="cannot read the condition"):
        q.filter_models(measured, where=["perplexity ~ 3"])
    with pytest.raises(CatalogueError, match="not a number"):
        q.filter_models(measured, where=["perplexity<low"])
    measured.record_evaluations(mid(1), "wikitext", 1, {"perplexity": 11.0})
    with pytest.raises(CatalogueError, match=r"'perplexity' is ambiguous: it matches perplexity\.perplexity, wikitext"):
        q.filter_models(measured, where=["perplexity<30"])
    assert names(q.filter_models(measured, where=["wikitext.perplexity<30"])) == ["m1"]


# -- pareto ----------------------------------------------------------------------------------
def dominates(p: q.ParetoPoint, r: q.ParetoPoint, min_x: bool, min_y: bool) -> bool:
    px, rx = (p.x, r.x) if min_x else (-p.x, -r.x)
    py, ry = (p.y, r.y) if min_y else (-p.y, -r.y)
    return px <= rx and py <= ry and (px < rx or py < ry)


def brute_front(points, min_x, min_y):
    return sorted((p for p in points if not any(dominates(o, p, min_x, min_y) for o in points)),
                  key=lambda p: (p.x, p.y, p.model.id))


def fake(n: int) -> ModelEntry:
    return ModelEntry(id=mid(n), architecture="Toy", created=datetime.now(timezone.utc))


@pytest.mark.parametrize("min_x, min_y", list(itertools.product([True, False], repeat=2)))
def test_pareto_front_matches_brute_force_on_random_points(min_x, min_y):
    rng = random.Random(7)
    for trial in range(200):
        points = [q.ParetoPoint(fake(i), rng.randint(0, 5), rng.randint(0, 5)) for i in range(rng.randint(0, 12))]
        assert q.pareto_front(points, min_x, min_y) == brute_front(points, min_x, min_y), trial


def test_pareto_on_recorded_models(catalogue_url):
    cat = Catalogue(catalogue_url)
    # n: (size, perplexity); 2 and 3 tie exactly, 4 is dominated by 2, 5 ties 6 on size but is worse,
    # 7 has no perplexity and 8 no size: both are left out.
    values = {1: (100, 50.0), 2: (200, 20.0), 3: (200, 20.0), 4: (300, 25.0), 5: (400, 15.0), 6: (400, 12.0),
              7: (50, None), 8: (None, 5.0), 9: (500, 12.0)}
    for n, (size, ppl) in values.items():
        cat.record_model(mid(n), "Toy", size_bytes=size, name=f"m{n}")
        if ppl is not None:
            cat.record_evaluations(mid(n), "perplexity", 1, {"perplexity": ppl})
    front, points = q.pareto(cat, "size", "perplexity")
    assert [p.model.name for p in front] == ["m1", "m2", "m3", "m6"]
    assert {p.model.name for p in points} == {f"m{n}" for n in (1, 2, 3, 4, 5, 6, 9)}
    assert [p.x for p in points] == sorted(p.x for p in points)
    for min_x, min_y in itertools.product([True, False], repeat=2):
        got, pts = q.pareto(cat, "size", "perplexity.perplexity", min_x, min_y)
        assert got == brute_front(pts, min_x, min_y)
    assert [p.model.name for p in q.pareto(cat, "size", "perplexity", False, False)[0]] == ["m1", "m4", "m5", "m9"]
    with pytest.raises(CatalogueError, match="unknown metric 'accuracy'"):
        q.pareto(cat, "size", "accuracy")


def test_pareto_on_a_real_chain(chain):
    front, points = q.pareto(chain.cat, "size.sparsity", "size.nonzero_params")
    assert {p.model.name for p in points} >= {"chain3", "sibling", "half"}
    assert front == brute_front(points, True, True)


# -- renderers ---------------------------------------------------------------------------------
QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


def check_dot(text: str) -> tuple[set[str], list[tuple[str, str, str]]]:
    """A small structural check of a DOT digraph: balanced braces and brackets outside strings,
    every statement ends with ';', every edge joins declared nodes. Returns (nodes, edges)."""
    body = QUOTED.sub('""', text)
    assert body.count("{") == body.count("}") == 1 and body.count("[") == body.count("]")
    lines = [line.strip() for line in text.strip().splitlines()]
    assert lines[0] == "digraph lineage {" and lines[-1] == "}"
    nodes: set[str] = set()
    edges = []
    for line in lines[1:-1]:
        assert line.endswith(";"), line
        edge = re.fullmatch(r'(\w+) -> (\w+) \[label=("(?:[^"\\]|\\.)*")(, style=dashed)?\];', line)
        node = re.fullmatch(r'(\w+) \[label=("(?:[^"\\]|\\.)*"), tooltip="[^"]*"\];', line)
        if edge:
            edges.append((edge[1], edge[2], edge[3]))
        elif node:
            nodes.add(node[1])
        else:
            assert re.fullmatch(r"(rankdir=TB|node \[shape=box\]);", line), line
    for source, target, _ in edges:
        assert source in nodes and target in nodes
    return nodes, edges


def check_mermaid(text: str) -> tuple[dict[str, str], list[tuple[str, str, str, str]]]:
    lines = text.rstrip("\n").split("\n")
    assert lines[0] == "graph TD"
    nodes, edges = {}, []
    for line in lines[1:]:
        node = re.fullmatch(r'    (m\d+)\["([^"]*)"\]', line)
        edge = re.fullmatch(r'    (m\d+) (-->|-\.->)\|"([^"]*)"\| (m\d+)', line)
        assert node or edge, line
        if node:
            nodes[node[1]] = node[2]
        else:
            edges.append((edge[1], edge[2], edge[3], edge[4]))
    assert all(s in nodes and t in nodes for s, _, _, t in edges)
    return nodes, edges


def test_mermaid_and_dot_of_a_real_chain(chain):
    models, steps = q.lineage_models(chain.cat, "chain3")
    nodes, edges = check_mermaid(lineage_mermaid(chain.cat, "chain3"))
    assert list(nodes.values()) == [m.label for m in models] and nodes["m3"] == "chain3"
    assert [(s, arrow, t) for s, arrow, _, t in edges] == [("m0", "-->", "m1"), ("m1", "-->", "m2"), ("m2", "-->", "m3")]
    assert "prune.unstructured" in edges[0][2] and "sparsity=0.2" in edges[0][2] and "sparsity=0.4" in edges[1][2]
    dot_nodes, dot_edges = check_dot(lineage_dot(chain.cat, "chain3"))
    assert dot_nodes == set(nodes) and [(s, t) for s, t, _ in dot_edges] == [(s, t) for s, _, _, t in edges]
    assert "scope=row" in dot_edges[2][2]
    base_nodes, base_edges = check_mermaid(lineage_mermaid(chain.cat, chain.base))
    assert len(base_nodes) == 1 and base_edges == []


def test_renderers_escape_names_and_draw_teachers(catalogue_url):
    cat = Catalogue(catalogue_url)
    cat.record_model(mid(1), "Toy", name='the "base" \\ model')
    cat.record_model(mid(2), "Toy", name="teacher")
    cat.record_model(mid(3), "Toy", name="student|1")
    add_step(cat, mid("c3"), [(mid(1), "input"), (mid(2), "teacher")], mid(3), method="distill.toy")
    nodes, edges = check_dot(lineage_dot(cat, mid(3)))
    assert len(nodes) == 3 and len(edges) == 2 and '\\"base\\" \\\\ model' in lineage_dot(cat, mid(3))
    m_nodes, m_edges = check_mermaid(lineage_mermaid(cat, mid(3)))
    assert m_nodes["m0"] == "the #quot;base#quot; \\ model" and m_nodes["m1"] == "student#124;1"
    assert m_nodes["m2"] == "teacher"  # extra parents come after the chain
    assert m_edges == [("m0", "-->", "distill.toy (sparsity=0.5)", "m1"), ("m2", "-.->", "teacher", "m1")]
    assert [s.method for s in q.lineage(cat, "student|1")] == ["distill.toy"]


def test_diff_pairs_metrics_measured_the_same_way(catalogue_url):
    from datetime import datetime, timezone

    with Catalogue(catalogue_url) as cat:
        for model in ("sha256:" + "a" * 64, "sha256:" + "b" * 64):
            cat.record_model(model, "LlamaForCausalLM")
        a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
        cat.record_evaluations(a, "perplexity", 1, {"perplexity": 4.0}, config={"max_windows": 200})
        cat.record_evaluations(b, "perplexity", 1, {"perplexity": 5.0}, config={"max_windows": 200})
        cat.record_evaluations(b, "perplexity", 1, {"perplexity": 9.0}, config={"max_windows": 10})  # newest
        cat.record_evaluations(a, "size", 1, {"params": 10.0}, config={})
        cat.record_evaluations(b, "size", 1, {"params": 8.0}, config={"include_embeddings": False})
        rows = {r["metric"]: r for r in q.diff(cat, a, b)["metrics"]}
        assert (rows["perplexity.perplexity"]["a"], rows["perplexity.perplexity"]["b"]) == (4.0, 5.0)
        assert rows["perplexity.perplexity"]["same_settings"] is True
        assert rows["size.params"]["same_settings"] is False and rows["size.params"]["b"] == 8.0
        # an evaluation imported twice from the same slimkit.json is recorded once
        when = datetime(2026, 1, 1, tzinfo=timezone.utc)
        for _ in range(2):
            cat.record_evaluations(a, "latency", 1, {"decode_tokens_per_s": 800.0}, created=when)
        assert [e.metric for e in cat.evaluations(a)].count("decode_tokens_per_s") == 1
