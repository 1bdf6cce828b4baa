"""Perplexity of a model opened block by block equals the in-memory figure, holding one block.

The streamed evaluation runs the same float32 operations on the same batches as a whole-model
forward (the blocks with the batch's captured masks and rotary embeddings, then the final norm
and the head per batch), so the figures are compared for exact equality, not within a tolerance.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from slimkit import (
    BlockStream, ConfigError, DataError, ModelLoadError, Recipe, load_model, open_streamed, streamed_hidden_states,
)
from slimkit.core.cli import make_cli
from slimkit.core.provenance import content_id
from slimkit.core.stream.plan import stream_problems
from slimkit.testing import one_line_error

PARAMS = {"seq_len": 64, "max_windows": 7, "add_bos": True}  # 7 windows: the last batch of 3 is short


def tiny_llama(folder: Path, tokenizer, *, shard: str | None = None, **extra) -> Path:
    """A 3-block Llama with random weights and an untied head, saved with the stories tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False, **extra)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder, **({"max_shard_size": shard} if shard else {}))
    tokenizer.save_pretrained(folder)
    return folder


def tiny_opt(folder: Path, tokenizer, **extra) -> Path:
    """A 2-block OPT (learned positions, LayerNorm, head tied to the embedding)."""
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(1)
    config = OPTConfig(vocab_size=512, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                       max_position_embeddings=256, **extra)
    OPTForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_gpt2(folder: Path, tokenizer) -> Path:
    """A 2-block GPT-2 (fused q/k/v in Conv1D layers, learned positions, tied head)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(2)
    GPT2LMHeadModel(GPT2Config(vocab_size=512, n_embd=32, n_layer=2, n_head=4, n_positions=256)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory, stories):
    tokenizer = load_model(stories).tokenizer
    root = tmp_path_factory.mktemp("stream-eval")
    return {
        "stories260K": stories,
        "llama-untied": tiny_llama(root / "llama", tokenizer),
        "llama-sharded": tiny_llama(root / "llama-sharded", tokenizer, shard="100KB"),
        "opt": tiny_opt(root / "opt", tokenizer),
        "gpt2": tiny_gpt2(root / "gpt2", tokenizer),
    }


def test_the_sharded_llama_has_several_shards_and_an_untied_head(folders, host):
    sharded = folders["llama-sharded"]
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("model-*.safetensors"))) > 3
    streamed = open_streamed(sharded, host)
    assert streamed.stream.head == "lm_head" and streamed.model.lm_head.weight.is_meta


@pytest.mark.parametrize("name", ["stories260K", "llama-untied", "llama-sharded", "opt", "gpt2"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_streamed_perplexity_equals_in_memory(host, folders, name, batch_size):
    params = {**PARAMS, "batch_size": batch_size}
    in_memory = host.evaluate("perplexity", load_model(folders[name]), params=params)
    streamed_model = open_streamed(folders[name], host)
    streamed = host.evaluate("perplexity", streamed_model, params=params)
    assert streamed == in_memory  # perplexity, nll, tokens, windows: bit for bit
    assert streamed["windows"] == 7 and streamed["tokens"] == 7 * 63
    stream = streamed_model.stream
    assert stream.writer is None and not stream.stored  # read only: nothing written
    assert all(p.is_meta for block in stream.block_names
               for p in streamed_model.model.get_submodule(block).parameters())


def test_hidden_states_of_a_model_in_memory_and_streamed(host, folders):
    model, streamed = load_model(folders["llama-sharded"]), open_streamed(folders["llama-sharded"], host)
    ids = torch.randint(0, 512, (5, 32), generator=torch.Generator().manual_seed(0))
    adapter = host.adapter_for(model)
    reports: list[tuple[int, int]] = []
    hidden = streamed_hidden_states(streamed, adapter, ids, batch_size=5, report=lambda *done: reports.append(done))
    assert hidden.shape == (5, 32, 64) and reports == [(1, 3), (2, 3), (3, 3)]
    assert torch.equal(hidden, streamed_hidden_states(model, adapter, ids, batch_size=5))
    with torch.no_grad():
        whole = model.model.model(input_ids=ids, use_cache=False).last_hidden_state  # after the final norm
        assert torch.equal(model.model.model.norm(hidden), whole)
    with pytest.raises(DataError, match=r"takes token windows \[N, L\], got a tensor of shape \(32,\)"):
        streamed_hidden_states(streamed, adapter, ids[0])


def test_max_windows_and_a_second_evaluation_of_the_same_stream(host, folders):
    streamed = open_streamed(folders["llama-sharded"], host)
    model = load_model(folders["llama-sharded"])
    for windows in (1, 4):
        params = {**PARAMS, "max_windows": windows, "batch_size": 2}
        result = host.evaluate("perplexity", streamed, params=params)
        assert result == host.evaluate("perplexity", model, params=params)
        assert result["windows"] == windows and result["tokens"] == windows * 63


def test_one_block_at_a_time_and_the_head_only_for_the_head(host, folders):
    """Structural proof of the memory claim: whenever a block runs, it is the only block with
    real weights, and the untied head is on the meta device; the head is filled when it runs."""
    streamed = open_streamed(folders["llama-sharded"], host)
    skeleton = streamed.model
    blocks = [skeleton.get_submodule(name) for name in streamed.stream.block_names]
    seen: list[tuple[int, int, bool]] = []  # (block index, blocks holding weights, head filled)

    def live(module):
        return any(not p.is_meta for p in module.parameters())

    def on_block(index):
        def hook(_module, _args):
            seen.append((index, sum(live(b) for b in blocks), not skeleton.lm_head.weight.is_meta))
        return hook

    head_calls: list[bool] = []
    handles = [block.register_forward_pre_hook(on_block(i)) for i, block in enumerate(blocks)]
    handles.append(skeleton.lm_head.register_forward_pre_hook(
        lambda module, _args: head_calls.append(not module.weight.is_meta)))
    try:
        host.evaluate("perplexity", streamed, params={**PARAMS, "batch_size": 3})
    finally:
        for handle in handles:
            handle.remove()
    # 3 batches (7 windows, 3 a batch) captured at block 0's input with no block filled, then each
    # block over the 3 batches with it alone filled, and the head empty throughout
    assert seen == [(0, 0, False)] * 3 + [(0, 1, False)] * 3 + [(1, 1, False)] * 3 + [(2, 1, False)] * 3
    assert head_calls == [True, True, True]
    assert skeleton.lm_head.weight.is_meta and not any(live(b) for b in blocks)  # emptied afterwards
    assert skeleton.model.embed_tokens.weight.is_meta  # filled for the capture only
    assert not skeleton.model.norm.weight.is_meta  # filled at open, kept


def test_a_visited_block_is_read_from_what_the_walk_wrote(host, folders, tmp_path):
    streamed = open_streamed(folders["llama-untied"], host, out=tmp_path / "out")
    stream: BlockStream = streamed.stream
    block = host.adapter_for(streamed).layout(streamed.model).blocks[1]
    stream.load_block(block)
    with torch.no_grad():
        block.module.mlp.down_proj.weight.zero_()
    stream.store_block(block)
    stream.visit_block(block)
    assert not block.module.mlp.down_proj.weight.any()
    stream.release_block(block)
    assert block.module.mlp.down_proj.weight.is_meta
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["part-block-00001.safetensors"]  # nothing more
    with stream.head_loaded():
        assert not streamed.model.lm_head.weight.is_meta
    assert streamed.model.lm_head.weight.is_meta


def test_a_finished_stream_says_to_reopen_it(host, folders, tmp_path):
    streamed = open_streamed(folders["llama-untied"], host, out=tmp_path / "out")
    streamed.stream.finish()
    with pytest.raises(ModelLoadError, match="its walk was finished and its output saved; open the saved folder"):
        host.evaluate("perplexity", streamed, params=PARAMS)


def test_logits_changed_after_the_head_are_refused(host, folders, tmp_path, stories):
    tokenizer = load_model(stories).tokenizer
    capped = open_streamed(tiny_llama(tmp_path / "capped", tokenizer, final_logit_softcapping=30.0), host)
    with pytest.raises(ConfigError) as error:
        host.evaluate("perplexity", capped, params=PARAMS)
    assert str(error.value).startswith("perplexity cannot run streamed on ")
    assert "final_logit_softcapping=30.0 after the head" in str(error.value) and "\n" not in str(error.value)
    projected = open_streamed(tiny_opt(tmp_path / "projected", tokenizer, word_embed_proj_dim=16), host)
    with pytest.raises(ConfigError, match="weights in model.decoder.project_out, outside its blocks"):
        host.evaluate("perplexity", projected, params=PARAMS)


def test_an_evaluator_that_does_not_stream_is_refused(host, folders, tmp_path):
    streamed = open_streamed(folders["llama-untied"], host)
    with pytest.raises(ConfigError, match="evaluator 'size' needs the model in memory, and .* was opened streamed"):
        host.evaluate("size", streamed)
    recipe = Recipe.from_data({
        "steps": [{"method": "prune.unstructured", "params": {"sparsity": 0.5}}],
        "evaluate": [{"metric": "perplexity", "params": PARAMS}, {"metric": "size"}],
    })
    problems = stream_problems(host, recipe.resolve(host), str(folders["llama-untied"]), tmp_path / "out")
    assert problems == ["evaluate 2 (size) needs the model in memory; drop it from a streamed run and evaluate "
                        "the result afterwards"]


# -- the command line ---------------------------------------------------------------------------------
def invoke(host, *args):
    return CliRunner().invoke(make_cli(host), [str(a) for a in args], catch_exceptions=False)


def test_cli_eval_stream_matches_in_memory_and_records_the_same_model(host, folders):
    from slimkit.core.catalogue import Catalogue

    folder = folders["llama-sharded"]
    options = ["--metric", "perplexity", "-p", "perplexity.seq_len=64", "-p", "perplexity.max_windows=5",
               "-p", "perplexity.batch_size=2", "--json"]
    streamed = invoke(host, "eval", folder, "--stream", *options)
    assert streamed.exit_code == 0, streamed.output
    in_memory = invoke(host, "eval", folder, *options, "--no-record")
    assert json.loads(streamed.stdout)["metrics"] == json.loads(in_memory.stdout)["metrics"]
    model_id = content_id(load_model(folder).model)  # the streamed eval recorded the in-memory id
    recorded = {e.metric: e.value for e in Catalogue().evaluations(model_id) if e.evaluator == "perplexity"}
    assert recorded["perplexity"] == json.loads(streamed.stdout)["metrics"]["perplexity"]["perplexity"]


def test_cli_eval_stream_defaults_to_perplexity(host, folders):
    result = invoke(host, "eval", folders["stories260K"], "--stream", "-p", "perplexity.max_windows=2", "--json",
                    "--no-record")
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)["metrics"]) == {"perplexity"}


def test_cli_eval_stream_refuses_a_gguf_file(host, tmp_path):
    import gguf
    import numpy as np

    file = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(file), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    line = one_line_error(invoke(host, "eval", file, "--stream", "--metric", "perplexity", "--no-record"))
    assert f"{file} is a GGUF file; streaming reads a Hugging Face folder of safetensors shards" in line


def test_cli_eval_stream_refuses_pickle_weights(host, folders, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    model = load_model(folders["llama-untied"])
    model.model.config.save_pretrained(folder)
    torch.save(model.model.state_dict(), folder / "pytorch_model.bin")
    line = one_line_error(invoke(host, "eval", folder, "--stream", "--metric", "perplexity", "--no-record"))
    assert f"{folder} has only pickle weights (pytorch_model.bin); streaming reads safetensors" in line


def test_cli_eval_stream_refuses_an_evaluator_that_needs_the_whole_model(host, tmp_path):
    line = one_line_error(invoke(host, "eval", tmp_path / "never-read", "--stream", "--metric", "size"))
    assert line == "Error: eval --stream: evaluator 'size' needs the model in memory; run it without --stream"
