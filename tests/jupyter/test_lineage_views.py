"""Lineage and Pareto pictures, the clickable SVG widget and the notebook reprs, on a real catalogue.

One catalogue built by real recipes on stories260K: a 3-step chain (prune, prune, distill with the
base as teacher) named ``student``, and a sibling branch (the same first step, then a harder
prune) under the hostile name ``<b>&"x"``; both evaluated (perplexity on 2 windows, size). No
kernel or browser: the widget is checked in-process through its traits.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest

pytest.importorskip("anywidget")
pytest.importorskip("matplotlib")

import matplotlib  # noqa: E402

import slimkit  # noqa: E402
from slimkit.core.catalogue import Catalogue  # noqa: E402
from slimkit.core.catalogue import queries as q  # noqa: E402
from slimkit.core.present.format import key_params  # noqa: E402
from slimkit.core.present.lineage import Lineage  # noqa: E402
from slimkit.core.present.svg import SELECT_PREFIX, decode_id, encode_id  # noqa: E402
from slimkit.jupyter_ext.lineage_svg import lineage_svg  # noqa: E402
from slimkit.jupyter_ext.pareto_plot import FRONT_PREFIX, HIGHLIGHT_PREFIX, pareto_png, pareto_svg  # noqa: E402
from slimkit.jupyter_ext.svgview import SvgView  # noqa: E402

HOSTILE = '<b>&"x"'
SVG = "{http://www.w3.org/2000/svg}"
EVALUATE = [{"metric": "perplexity", "params": {"max_windows": 2, "seq_len": 64}}, {"metric": "size"}]
PRUNE = {"method": "prune.unstructured", "params": {"sparsity": 0.3}}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("views")
    host = slimkit.make_host(load_entrypoints=False)
    cat = Catalogue(tmp / "cat.db")

    def run(data, name):
        return slimkit.run_recipe(slimkit.Recipe.from_data({**data, "evaluate": EVALUATE}), "example:stories260K",
                                  out=tmp / ("student" if name == "student" else "sibling"), host=host, catalogue=cat, name=name)

    student = run({"calibration": {"n_samples": 2, "seq_len": 32, "seed": 0}, "steps": [
        PRUNE, {"method": "prune.unstructured", "params": {"sparsity": 0.5, "scope": "row"}},
        {"method": "distill", "params": {"steps": 2, "seq_len": 32, "lr": 1e-3}}]}, "student")
    hostile = run({"steps": [PRUNE, {"method": "prune.unstructured", "params": {"sparsity": 0.7}}]}, HOSTILE)
    ids = [s.child_id for s in student.steps]
    yield SimpleNamespace(cat=cat, student=student, hostile=hostile, base=student.steps[0].parent_id,
                          first=ids[0], second=ids[1], student_id=ids[2], hostile_id=hostile.steps[-1].child_id,
                          empty=tmp / "empty.db")
    cat.close()


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def selectable(root: ET.Element) -> list[str]:
    """Decoded model ids of the elements marked selectable, in document order."""
    return [decode_id(e.get("id")[len(SELECT_PREFIX):]) for e in root.iter() if
            (e.get("id") or "").startswith(SELECT_PREFIX)]


def texts(root: ET.Element) -> list[str]:
    return ["".join(e.itertext()) for e in root.iter(f"{SVG}text")]


# -- ids ---------------------------------------------------------------------------------------
def test_ids_round_trip_and_are_plain_attribute_text():
    model_id = "sha256:" + "ab" * 32
    assert encode_id(model_id) == "sha256%3A" + "ab" * 32
    assert decode_id(encode_id(model_id)) == model_id
    odd = 'a b/<&>"\'é'
    assert decode_id(encode_id(odd)) == odd and all(c.isalnum() or c in "%-_.~" for c in encode_id(odd))


# -- lineage drawing ---------------------------------------------------------------------------
def test_lineage_svg_has_one_selectable_box_per_ancestor_labelled_by_step(world):
    svg = lineage_svg(world.cat, "student")
    root = parse(svg)
    models, steps = q.lineage_models(world.cat, "student")
    assert selectable(root) == [m.id for m in models] == [world.base, world.first, world.second, world.student_id]
    words = texts(root)
    assert sum(t == "prune.unstructured" for t in words) == 2
    assert "distill" in words
    assert "sparsity=0.3" in words and "sparsity=0.5" in words
    assert "student" in words and any(t.startswith("perplexity ") for t in words)  # headline metric
    edges = [g for g in root.iter(f"{SVG}g") if "slimkit-edge" in (g.get("class") or "")]
    assert len(edges) == 4  # three steps and the teacher
    assert svg == lineage_svg(world.cat, world.student_id)  # deterministic, names and ids alike


def test_the_teacher_edge_is_dashed_and_only_with_a_distill_step(world):
    root = parse(lineage_svg(world.cat, "student"))
    dashed = [p for p in root.iter(f"{SVG}path") if p.get("stroke-dasharray")]
    assert len(dashed) == 1
    teacher = [g for g in root.iter(f"{SVG}g") if "slimkit-edge-teacher" in (g.get("class") or "")]
    assert len(teacher) == 1 and teacher[0].find(f"{SVG}path").get("stroke-dasharray")
    assert "teacher" in "".join(teacher[0].itertext())
    plain = parse(lineage_svg(world.cat, world.hostile_id))
    assert not [p for p in plain.iter(f"{SVG}path") if p.get("stroke-dasharray")]


def test_hostile_names_are_escaped_in_the_drawing(world):
    svg = lineage_svg(world.cat, HOSTILE)
    assert HOSTILE not in svg and "&lt;b&gt;&amp;&quot;x&quot;" in svg
    root = parse(svg)
    assert HOSTILE in texts(root)
    assert selectable(root) == [world.base, world.first, world.hostile_id]


def test_lineage_svg_adds_direct_descendants_and_marks_focus_and_selection(world):
    root = parse(lineage_svg(world.cat, world.first, selected=world.base))
    assert selectable(root) == [world.base, world.first, world.second, world.hostile_id]
    classes = {decode_id(g.get("id")[len(SELECT_PREFIX):]): g.get("class") for g in root.iter(f"{SVG}g")
               if (g.get("id") or "").startswith(SELECT_PREFIX)}
    assert "slimkit-selected" in classes[world.base] and "slimkit-focus" not in classes[world.base]
    assert "slimkit-focus" in classes[world.first] and "slimkit-selected" not in classes[world.first]
    only = parse(lineage_svg(world.cat, world.first, derived=False))
    assert selectable(only) == [world.base, world.first]
    # the base: its first step's child, and the student through the teacher role (dashed)
    base = parse(lineage_svg(world.cat, world.base))
    assert selectable(base) == [world.base, world.first, world.student_id]
    assert len([p for p in base.iter(f"{SVG}path") if p.get("stroke-dasharray")]) == 1


# -- Pareto plot -------------------------------------------------------------------------------
@pytest.mark.parametrize("minimize_x", [True, False])
def test_pareto_svg_marks_every_point_and_the_front_as_queries_pareto(world, minimize_x):
    backend = matplotlib.get_backend()
    svg = pareto_svg(world.cat, "size.nonzero_params", "perplexity", minimize_x=minimize_x, selected="student")
    assert matplotlib.get_backend() == backend
    front, points = q.pareto(world.cat, "size.nonzero_params", "perplexity", minimize_x=minimize_x)
    root = parse(svg)
    assert sorted(selectable(root)) == sorted(p.model.id for p in points)
    assert len(points) == 3  # base, student, hostile: the intermediate models were not evaluated
    rings = [decode_id(e.get("id")[len(FRONT_PREFIX):]) for e in root.iter()
             if (e.get("id") or "").startswith(FRONT_PREFIX)]
    assert sorted(rings) == sorted(p.model.id for p in front)
    if not minimize_x:  # keeping the most weights: the dense base dominates both pruned models
        assert rings == [world.base]
    highlight = [e.get("id") for e in root.iter() if (e.get("id") or "").startswith(HIGHLIGHT_PREFIX)]
    assert highlight == [HIGHLIGHT_PREFIX + encode_id(world.student_id)]
    words = texts(root)
    assert HOSTILE in words and "student" in words and HOSTILE not in svg
    assert any("size.nonzero_params" in t for t in words) and any("perplexity.perplexity" in t for t in words)
    assert svg == pareto_svg(world.cat, "size.nonzero_params", "perplexity", minimize_x=minimize_x,
                             selected="student")


def test_pareto_says_why_when_there_is_nothing_to_plot(world):
    with Catalogue(world.empty) as empty:
        root = parse(pareto_svg(empty, "params", "size"))
    assert not selectable(root) and any("no model has both params and size" in t for t in texts(root))
    unknown = parse(pareto_svg(world.cat, "nonsense", "perplexity"))
    assert any("unknown metric 'nonsense'" in t for t in texts(unknown))


def test_pareto_png_is_a_png(world):
    data = pareto_png(world.cat, "size.sparsity", "perplexity", minimize_x=False)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


# -- the widget ----------------------------------------------------------------------------------
def test_svgview_lists_and_selects_clickable_models_of_both_pictures(world):
    view = SvgView(lineage_svg(world.cat, "student"))
    assert view.clickable_ids == [world.base, world.first, world.second, world.student_id]
    view.select(world.first)
    assert view.selected == world.first
    with pytest.raises(ValueError, match="not selectable"):
        view.select(world.hostile_id)
    assert view.selected == world.first
    view.select(None)
    assert view.selected == ""
    seen = []
    view.observe(lambda change: seen.append(change["new"]), "selected")
    view.svg = pareto_svg(world.cat, "size.nonzero_params", "perplexity")
    assert sorted(view.clickable_ids) == sorted([world.base, world.student_id, world.hostile_id])
    view.select(world.hostile_id)
    assert seen == [world.hostile_id]
    assert "export default" in view._esm and "slimkit-select-" in view._esm and "slimkit-selected" in view._css
    assert view.get_state()["clickable_ids"] == view.clickable_ids  # synced to the browser too


def test_svgview_reads_single_quoted_and_entity_escaped_ids():
    svg = ("<svg xmlns='http://www.w3.org/2000/svg'><g id='slimkit-select-a%3Ab'><rect/></g>"
           "<g id=\"slimkit-select-c&amp;d\"/><g id='slimkit-select-a%3Ab'/><g id='other'/></svg>")
    assert SvgView(svg).clickable_ids == ["a:b", "c&d"]


# -- reprs -------------------------------------------------------------------------------------
def test_entry_reprs_show_the_key_facts_escaped(world):
    cat = world.cat
    hostile = cat.model(world.hostile_id)
    page = hostile._repr_html_()
    assert world.hostile_id in page and "&lt;b&gt;&amp;&quot;x&quot;" in page and HOSTILE not in page
    assert "LlamaForCausalLM" in page and "260,032" in page
    assert hostile._repr_json_()["id"] == world.hostile_id
    (distill,) = cat.steps_into(world.student_id)
    page = distill._repr_html_()
    assert "distill" in page and "teacher" in page and world.base.split(":")[1][:12] in page
    assert key_params(distill) in page and distill.id in page
    evaluation = next(e for e in cat.evaluations(world.student_id) if e.key == "perplexity.perplexity")
    page = evaluation._repr_html_()
    assert "perplexity.perplexity" in page and f"{evaluation.value:.4g}" in page
    assert evaluation._repr_json_()["value"] == evaluation.value


def test_descendants_node_repr_is_the_tree(world):
    tree = q.descendants(world.cat, world.base)
    page = tree._repr_html_()
    for node in tree.walk():
        assert node.model.id.split(":")[1][:12] in page
    assert "&lt;b&gt;&amp;&quot;x&quot;" in page and HOSTILE not in page
    assert page.count("prune.unstructured") == 3 and "distill" in page and "sparsity=0.7" in page
    assert page.count("<li>") == len(list(tree.walk()))
    assert tree._repr_json_() == tree.to_dict()


def test_lineage_object_matches_queries_and_renders(world):
    view = Lineage.of(world.cat, "student")
    models, steps = q.lineage_models(world.cat, "student")
    assert [s.id for s in view.steps] == [s.id for s in q.lineage(world.cat, "student")] == [s.id for s in steps]
    assert view.models == models and view.focus == world.student_id and view.model.name == "student"
    assert view.related == [] and view.derived == []  # the teacher is the base, already on the chain
    assert view.metrics[world.student_id]["perplexity.perplexity"] == world.cat.metrics(world.student_id)[
        "perplexity.perplexity"]
    middle = Lineage.of(world.cat, world.first)
    assert [m.id for m in middle.related] == [world.second, world.hostile_id]
    assert {s.child_id for s in middle.derived} == {world.second, world.hostile_id}
    page = view._repr_html_()
    assert "<svg" in page and page.count("<tr>") == 1 + len(steps)
    assert "distill" in page and "sparsity=0.5" in page and "student" in page
    bundle = view._repr_mimebundle_()
    parse(bundle["image/svg+xml"])
    assert bundle["image/svg+xml"] == view._repr_svg_() and bundle["application/json"]["focus"] == world.student_id
    assert "&lt;b&gt;" in Lineage.of(world.cat, HOSTILE)._repr_html_() and HOSTILE not in Lineage.of(
        world.cat, HOSTILE)._repr_html_()


def test_run_result_and_loaded_model_reprs(world):
    result = world.student
    page = result._repr_html_()
    for key, _, _ in result.comparison():
        assert key in page
    ppl_before, ppl_after = result.before["perplexity"]["perplexity"], result.after["perplexity"]["perplexity"]
    assert f"{ppl_before:.4g}" in page and f"{ppl_after:.4g}" in page
    assert page.count("prune.unstructured") == 2 and "distill" in page and "sparsity=0.3" in page
    assert world.student_id.split(":")[1][:12] in page
    page = result.model._repr_html_()
    assert result.model.architecture in page and "260,032" in page and "distill" in page
    assert result.provenance["content_id"] in page
    sibling = world.hostile._repr_html_()
    assert "sparsity=0.7" in sibling and world.hostile_id.split(":")[1][:12] in sibling


def test_core_renderers_import_no_notebook_libraries():
    code = ("import sys; import slimkit.core.present.lineage, slimkit.core.present.html, "
            "slimkit.core.present.svg; bad = [m for m in ('matplotlib', 'ipywidgets', 'anywidget') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
