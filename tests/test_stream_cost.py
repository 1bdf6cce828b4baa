"""The memory budget (``--max-memory``): what a run is expected to need, said before it starts; a run
too big for memory streams, one too big even streamed is refused with what would fit."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from test_stream import METHODS, recipe, tiny_folder

import slimkit
from slimkit import ConfigError, RecipeError, run_recipe
from slimkit.core.runtime import RuntimeSpec
from slimkit.core.stream.checkpoint import Checkpoint
from slimkit.core.stream.cost import estimate, parse_bytes
from slimkit.core.stream.plan import memory_plan


@pytest.mark.parametrize("text,count", [("6GiB", 6 * 2**30), ("6 GB", 6 * 10**9), ("512MiB", 2**29),
                                        ("1.5gib", 3 * 2**29), ("1000", 1000), (77, 77)])
def test_sizes(text, count):
    assert parse_bytes(text) == count


@pytest.mark.parametrize("text", ["6 apples", "", "GiB", "-1GB"])
def test_sizes_that_are_not(text):
    with pytest.raises(ConfigError, match="is not a size"):
        parse_bytes(text)


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """Blocks of ~10 MB each (the process's own few hundred MB would drown smaller ones)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("wide") / "model"
    tiny_folder(folder)  # the tokenizer files
    config = LlamaConfig(hidden_size=512, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=8,
                         num_key_value_heads=4, vocab_size=512, max_position_embeddings=128, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(folder, max_shard_size="12MB")
    return folder


def test_the_estimate_counts_the_blocks_weights(wide):
    loaded = slimkit.load_model(wide)
    block = sum(p.numel() * 4 for p in loaded.model.model.layers[0].parameters())
    total = sum(p.numel() * 4 for p in loaded.model.parameters())
    names = tuple(f"model.layers.{i}" for i in range(4))
    cost = estimate(Checkpoint.open(wide), loaded.config, names, "float32")
    assert (cost.block_bytes, cost.model_bytes) == (block, total)
    half = estimate(Checkpoint.open(wide), loaded.config, names, "bfloat16")
    assert half.block_bytes * 2 == block
    table = 512 * 512 * 4  # the embedding and the untied head: a streamed run holds them apart from the blocks
    assert (cost.resident_outer, cost.table_bytes) == (total - 4 * block - 2 * table, table)
    assert cost.in_memory - cost.streamed == total - block + 2 * table


@pytest.fixture
def steady(monkeypatch):
    """The process's own memory held at one figure: the budget below sits ~14 MB from either estimate, and a
    long test session's resident size moves by more than that between two plans (CI saw it)."""
    from slimkit.core.stream import cost

    held = cost.resident_bytes()
    monkeypatch.setattr(cost, "resident_bytes", lambda: held)


def _between(host, wide, steps):
    """A budget between the streamed and the in-memory estimate of ``steps`` on ``wide``."""
    plan = memory_plan(host, recipe(*steps).resolve(host), str(wide), None, RuntimeSpec(stream=True, max_memory="1TiB"))
    assert plan.cost is not None and plan.cost.in_memory - plan.cost.streamed > 20 * 2**20
    return str((plan.cost.in_memory + plan.cost.streamed) // 2)


def test_a_run_too_big_for_memory_streams(wide, tmp_path, host, steady):
    budget = _between(host, wide, [METHODS["wanda"]])
    notes = []
    result = run_recipe(recipe(METHODS["wanda"]), wide, out=tmp_path / "out", catalogue=False, host=host,
                        runtime=RuntimeSpec(max_memory=budget), progress=notes.append)
    assert result.steps[0].versions["streamed"] == "block by block"
    said = [e.message for e in notes if e.total == 0]
    assert said[0].startswith("the model needs") and "streaming it block by block instead" in said[0]
    assert said[1].startswith("first block") and "for 4 blocks" in said[1]
    memory = run_recipe(recipe(METHODS["wanda"]), wide, catalogue=False, host=host)
    assert memory.steps[0].child_id == result.steps[0].child_id


def test_a_run_that_cannot_stream_and_does_not_fit_is_refused(wide, tmp_path, host, steady):
    steps = [("prune.blocks", {"count": 1, "scorer": "blocks.cosine"})]
    budget = _between(host, wide, steps)
    with pytest.raises(RecipeError, match=r"more than the budget .* cannot stream instead \(step 1 \(prune.blocks\) "
                                          r"cannot run streamed"):
        run_recipe(recipe(*steps), wide, out=tmp_path / "out", catalogue=False, host=host,
                   runtime=RuntimeSpec(max_memory=budget))
    assert not (tmp_path / "out").exists()


def test_a_budget_below_one_streamed_block_is_refused_with_what_would_fit(wide, tmp_path):
    from slimkit.core.cli import make_cli

    (tmp_path / "r.yaml").write_text(recipe(METHODS["wanda"]).to_yaml())
    result = CliRunner().invoke(make_cli(), ["run", str(tmp_path / "r.yaml"), "-m", str(wide), "--no-record",
                                             "--out", str(tmp_path / "out"), "--stream", "--max-memory", "50MB"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "a streamed run needs about" in result.output and "more than the budget 48 MiB" in result.output
    assert "--dtype bfloat16" in result.output and not (tmp_path / "out").exists()
