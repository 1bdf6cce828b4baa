"""Block Influence scoring (ShortGPT) and whole-block removal on the bundled 260K Llama."""

from __future__ import annotations

import pytest
import torch
import transformers

import slimkit
from slimkit.core.errors import ConfigError, RecipeError, SlimkitError



def influence(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().reshape(-1, a.shape[-1]), b.double().reshape(-1, b.shape[-1])
    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
    return float(1 - cos.mean())


def reference_influence(model, ids) -> list[float]:
    """Independently: blocks 0..n-2 from HF's hidden states, the last block by a forward hook
    (HF's last hidden state is after the final norm)."""
    seen = []
    last = model.model.model.layers[-1]
    handle = last.register_forward_hook(lambda m, args, out: seen.append((args[0], out[0] if isinstance(out, tuple) else out)))
    with torch.no_grad():
        hidden = model.model(ids, output_hidden_states=True, use_cache=False).hidden_states
    handle.remove()
    n = len(model.model.model.layers)
    values = [influence(hidden[i], hidden[i + 1]) for i in range(n - 1)]
    return values + [influence(*seen[0])]


def prune(host, model, calibration, **params):
    info = host.compressors.get("prune.blocks")
    config = host.config(info, params)
    ctx = host.context(calibration=calibration)
    compressor = info.create()
    adapter = host.adapter_for(model)
    compressor.check(model, adapter, config, ctx)
    return compressor.compress_(model, adapter, config, ctx)


def test_cosine_scores_match_hidden_states(host, model, calibration):
    scores = host.score("blocks.cosine", model, context=host.context(calibration=calibration))
    assert scores.granularity == "block" and scores["blocks"].shape == (5,)
    expected = torch.tensor(reference_influence(model, calibration.input_ids), dtype=torch.float64)
    torch.testing.assert_close(scores["blocks"], expected, rtol=1e-5, atol=1e-7)


def test_removal_reloads_and_generates(host, model, calibration, tmp_path):
    scores = host.score("blocks.cosine", model, context=host.context(calibration=calibration))["blocks"]
    weakest = int(scores.argmin())
    block_params = sum(p.numel() for p in model.model.model.layers[0].parameters())
    before = sum(p.numel() for p in model.model.parameters())
    summary = prune(host, model, calibration, count=1)
    assert summary.details["removed_blocks"] == [weakest]
    assert sum(p.numel() for p in model.model.parameters()) == before - block_params
    assert summary.details["params_after"] == before - block_params
    layers = model.model.model.layers
    assert isinstance(layers, torch.nn.ModuleList) and len(layers) == 4
    assert model.config.num_hidden_layers == 4
    assert [block.self_attn.layer_idx for block in layers] == [0, 1, 2, 3]

    out = slimkit.save_model(model, tmp_path / "out", provenance={})
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    ids = calibration.input_ids[:2]
    with torch.no_grad():
        assert torch.equal(model.model(ids).logits, reloaded(ids).logits)
        prompt = ids[:1, :8]
        ours = model.model.generate(prompt, max_new_tokens=5, do_sample=False)
        theirs = reloaded.generate(prompt, max_new_tokens=5, do_sample=False)
    assert ours.shape == (1, 13) and torch.equal(ours, theirs)


def test_fraction_removes_the_lowest_blocks(host, model, calibration):
    scores = host.score("blocks.cosine", model, context=host.context(calibration=calibration))["blocks"]
    summary = prune(host, model, calibration, fraction=0.4)
    assert summary.details["removed_blocks"] == sorted(torch.argsort(scores)[:2].tolist())
    assert model.config.num_hidden_layers == 3


def test_bad_amounts_are_refused(host, model, calibration):
    with pytest.raises(ConfigError, match="at least one block must remain"):
        prune(host, model, calibration, count=5)
    with pytest.raises(SlimkitError, match="exactly one of count, fraction and blocks"):
        prune(host, model, calibration, count=1, fraction=0.5)
    with pytest.raises(ConfigError, match="removes no block"):
        prune(host, model, calibration, fraction=0.05)
    with pytest.raises(ConfigError, match="needs a block scorer"):
        prune(host, model, calibration, count=1, scorer="magnitude")
    assert len(model.model.model.layers) == 5


def test_recipe_removes_a_block(host):
    recipe = slimkit.Recipe.from_data({
        "calibration": {"n_samples": 4, "seq_len": 64, "seed": 0},
        "steps": [{"method": "prune.blocks", "params": {"count": 1}}],
    })
    result = slimkit.run_recipe(recipe, "example:stories260K", host=host, catalogue=False)
    assert result.model.config.num_hidden_layers == 4


def test_named_blocks_are_removed_without_a_scorer(host):
    """Every other block of five (1 and 3), e.g. for a shallower student to distil into."""
    recipe = slimkit.Recipe.from_data({"steps": [{"method": "prune.blocks", "params": {"blocks": [3, 1]}}]})
    result = slimkit.run_recipe(recipe, "example:stories260K", host=host, catalogue=False)
    assert result.model.config.num_hidden_layers == 3
    assert result.summaries[0].details["kept_blocks"] == [0, 2, 4] and result.summaries[0].details["scores"] is None
    assert "by request" in result.steps[0].summary


@pytest.mark.parametrize("params, message", [
    ({"blocks": [1, 7]}, r"blocks \[7\] do not exist: the model has blocks 0..4"),
    ({"blocks": [0, 1, 2, 3, 4]}, "at least one block must remain"),
    ({"blocks": [1, 1]}, "lists a block twice"),
    ({"blocks": [1], "count": 1}, "exactly one of count, fraction and blocks"),
])
def test_bad_block_lists_are_refused(host, params, message):
    recipe = slimkit.Recipe.from_data({"steps": [{"method": "prune.blocks", "params": params}]})
    with pytest.raises(RecipeError, match=message):
        slimkit.run_recipe(recipe, "example:stories260K", host=host, catalogue=False)


def tiny(kind: str):
    common = {"vocab_size": 96, "max_position_embeddings": 64}
    if kind == "gpt2":
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=96, n_embd=32, n_layer=3, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0))
    if kind == "opt":
        return transformers.OPTForCausalLM(transformers.OPTConfig(
            hidden_size=32, ffn_dim=72, num_hidden_layers=3, num_attention_heads=4, word_embed_proj_dim=32,
            pad_token_id=1, bos_token_id=2, eos_token_id=2, **common))
    return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
        use_sliding_window=True, sliding_window=16, max_window_layers=1, **common))


@pytest.mark.parametrize("kind", ["gpt2", "opt", "qwen2"])
def test_other_families_generate_with_cache_after_removal(host, kind, tmp_path):
    from slimkit.core.model_io import LoadedModel
    from slimkit.core.scores import Scores

    torch.manual_seed(0)
    loaded = LoadedModel(model=tiny(kind).eval())
    ctx = host.context()
    ctx.score = lambda *args, **kwargs: Scores("fixed", "block", {"blocks": torch.tensor([1.0, 0.0, 1.0])})
    info = host.compressors.get("prune.blocks")
    config = host.config(info, {"count": 1, "scorer": "blocks.cosine"})
    summary = info.create().compress_(loaded, host.adapter_for(loaded), config, ctx)
    assert summary.details["kept_blocks"] == [0, 2]
    prompt = torch.tensor([[3, 5, 9, 2, 17, 33]])
    with torch.no_grad():
        cached = loaded.model.generate(prompt, max_new_tokens=5, do_sample=False, use_cache=True)
        uncached = loaded.model.generate(prompt, max_new_tokens=5, do_sample=False, use_cache=False)
        loaded.model.save_pretrained(tmp_path)
        reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
        assert torch.equal(reloaded(prompt).logits, loaded.model(prompt).logits)
    assert torch.equal(cached, uncached)


def test_layer_index_scaled_attention_is_refused(host):
    from slimkit.core.errors import ArchitectureError
    from slimkit.core.model_io import LoadedModel

    model = tiny("gpt2")
    model.config.scale_attn_by_inverse_layer_idx = True
    loaded = LoadedModel(model=model)
    info = host.compressors.get("prune.blocks")
    config = host.config(info, {"count": 1})
    with pytest.raises(ArchitectureError, match="scales attention by layer index"):
        info.create().check(loaded, host.adapter_for(loaded), config, host.context(calibration=object()))
