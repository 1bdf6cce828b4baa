"""One presentation layer: the formatting rules, and a run shown alike by the CLI, the notebook
repr and the panel (the same strings for the same numbers, cell by cell)."""

from __future__ import annotations

import dataclasses
import math
from html.parser import HTMLParser

import pytest

from slimkit.core.present import format as f


# -- the rules -------------------------------------------------------------------------------
@pytest.mark.parametrize("value, text", [
    (None, "-"), (260032, "260,032"), (-3, "-3"), (True, "True"), (3.0, "3"), (0.5, "0.5"), (23.456789, "23.46"),
    (999.94, "999.9"), (1234.5678, "1,235"), (2.5e9, "2,500,000,000"), (1.23456e-5, "1.235e-05"),
    (math.nan, "nan"), (math.inf, "inf"), ("text", "text"),
])
def test_numbers(value, text):
    assert f.number(value) == text


@pytest.mark.parametrize("before, after, text", [
    (2.0, 1.0, "x0.5"), (3.0, 4.0, "x1.33"), (7, 7, ""), (0.25, 0.25, ""),  # unchanged: blank
    (None, 1.0, "-"), (1.0, None, "-"), (None, None, "-"), (math.nan, 1.0, "-"), (1.0, math.nan, "-"),
    (0.0, 0.5, "-"),  # no ratio from zero
    (1.0, 4096.0, "x4,096"), (-2.0, 1.0, "x-0.5"),
])
def test_one_ratio_printer(before, after, text):
    assert f.change(before, after) == text


def test_sizes_percentages_durations_ids():
    assert [f.human_bytes(n) for n in (None, 512, 1536, 3 * 1024 ** 2, 5 * 1024 ** 4)] == [
        "-", "512 B", "1.50 KiB", "3.00 MiB", "5120.00 GiB"]
    assert [f.percent(x) for x in (None, 0.5, 0.12345)] == ["-", "50.0%", "12.3%"] and f.percent(0.5, 0) == "50%"
    assert [f.duration(s) for s in (None, 1.5, 12.34, 1234.5)] == ["-", "1.50 s", "12.3 s", "1,234 s"]
    assert f.short_id("sha256:0123456789abcdef" + "0" * 48) == "0123456789ab" and f.short_id(None) == "-"
    assert f.compact(260032) == "260K" and f.compact(7) == "7"


def test_metric_values_by_what_they_measure():
    assert f.metric_value("size.disk_bytes", 2048.0) == "2.00 KiB" and f.metric_value("size", 512) == "512 B"
    assert f.metric_value("size.sparsity", 0.5) == "50.0%"
    assert f.metric_value("perplexity.perplexity", 12.3456) == "12.35"
    assert f.metric_value("size.params", 260032.0) == "260,032" and f.metric_value("anything", None) == "-"


def test_key_params_numbers_first_then_words_then_switches():
    config = {"name": "prune", "version": 1, "data": {"sequential": True, "scope": "row", "sparsity": 0.5,
                                                       "roles": ["q"], "seed": 3}}
    assert f.config_params(config) == "sparsity=0.5, seed=3, scope=row"
    assert f.config_params(config["data"], limit=None) == "sparsity=0.5, seed=3, scope=row, sequential=True"
    assert f.config_params("not a config") == ""
    assert f.step_label("m", "") == "m" and f.step_label("m", "a=1") == "m(a=1)"


# -- every screen ----------------------------------------------------------------------------
class _Tables(HTMLParser):
    """The text of every cell of every table in a page, row by row (header rows included)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def html_table(page: str, header: list[str]) -> list[list[str]]:
    """The body rows of the one table of ``page`` whose first row is ``header``."""
    parser = _Tables()
    parser.feed(page)
    (rows,) = [t[1:] for t in parser.tables if t and t[0] == header]
    return rows


def cli_table(text: str, header: list[str]) -> list[list[str]]:
    """The body rows of the rich table in ``text`` whose header is ``header``."""
    rows = [[cell.strip() for cell in line.strip()[1:-1].split(line.strip()[0])]
            for line in text.splitlines() if line.strip()[:1] in ("│", "┃")]
    start = rows.index(header)
    return rows[start + 1:]


@pytest.fixture(scope="module")
def run_result(tmp_path_factory):
    import slimkit

    recipe = slimkit.Recipe.from_data({
        "steps": [{"method": "prune.unstructured", "params": {"sparsity": 0.5}}],
        "evaluate": [{"metric": "perplexity", "params": {"max_windows": 2, "seq_len": 64}}, {"metric": "size"}]})
    return slimkit.run_recipe(recipe, "example:stories260K", out=tmp_path_factory.mktemp("present") / "out",
                              host=slimkit.make_host(load_entrypoints=False), catalogue=False)


@pytest.fixture(params=["a real run", "edge values"])
def result(request, run_result):
    if request.param == "a real run":
        return run_result
    # The same real RunResult with values a run can have but this one lacks: a metric measured only
    # after, a zero before, nothing changed, not a number, a size in bytes.
    return dataclasses.replace(
        run_result,
        before={"m": {"fresh_bytes": 1.0, "zero": 0.0, "same": 7.0, "broken": math.nan}},
        after={"m": {"new_metric": 12.5, "fresh_bytes": 4096.0, "zero": 3.0, "same": 7.0, "broken": 2.0,
                     "sparsity": 0.25, "big": 123456.789}})


def test_a_run_reads_the_same_in_the_cli_the_notebook_and_the_panel(result, capsys):
    from slimkit.core.cli.run import show_result
    from slimkit.jupyter_ext.tables import results_table

    header = ["metric", "before", "after", "change"]
    show_result(result, "the run")
    cli = cli_table(capsys.readouterr().out, header)
    notebook = html_table(result._repr_html_(), header)
    panel = html_table(results_table(result), header)
    expected = [list(row) for row in f.comparison(result.comparison())]
    assert len(expected) == len(result.comparison()) > 0
    assert notebook == panel == expected
    assert cli[:-1] == expected and cli[-1][0] == "compression time"  # the CLI adds the time the steps took
    shown = {row[0]: row for row in expected}
    if "m.same" in shown:  # the rules, as every screen shows them
        assert shown["m.new_metric"] == ["m.new_metric", "-", "12.5", "-"]
        assert shown["m.zero"][3] == "-" and shown["m.same"][3] == "" and shown["m.broken"][1:] == ["nan", "2", "-"]
        assert shown["m.fresh_bytes"][1:] == ["1 B", "4.00 KiB", "x4,096"]
        assert shown["m.sparsity"][2] == "25.0%" and shown["m.big"][2] == "123,457"
    else:
        assert shown["size.params"][3] == "" and shown["size.sparsity"][1] == "0.0%"
        assert shown["size.sparsity"][3] == "-"  # from zero sparsity: no ratio
