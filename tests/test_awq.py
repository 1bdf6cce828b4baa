"""AWQ on the bundled stories260K (GQA: 8 heads, 4 kv heads): the scale fold is exact, the scaled
and clipped layers beat round-to-nearest on real activations, and bad input is refused."""

from __future__ import annotations

import pytest
import torch
import transformers
from torch import nn

from slimkit import Recipe, load_model, run_recipe
from slimkit.core.data import CalibrationData, TextSource, calibration_samples, tokenize
from slimkit.core.errors import ArchitectureError, ConfigError, RecipeError
from slimkit.core.model_io import LoadedModel, example_text
from slimkit.core.quant.modules import QuantizedLinear
from slimkit.plugins.quantization.awq import AWQConfig, awq_, clip_ratios, search_clip

HELD_OUT = 0.7  # calibration from the text's first 70%, held-out evaluation on the rest


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    text = example_text().read_text()
    cut = int(len(text) * HELD_OUT)
    folder = tmp_path_factory.mktemp("awq-text")
    (folder / "calibration.txt").write_text(text[:cut])
    return folder / "calibration.txt", text[cut:]


@pytest.fixture
def calibration(model, texts):
    return calibration_samples(model.tokenizer, TextSource(texts[0]), n_samples=8, seq_len=128, seed=0)


@pytest.fixture(scope="module")
def held_out(texts):
    ids = tokenize(load_model("example:stories260K").tokenizer, texts[1])[: 24 * 128]
    return ids.reshape(24, 128)


def logits(model, ids):
    with torch.no_grad():
        return model.model(ids, use_cache=False).logits


def relative(a, b):
    return float((a - b).norm() / b.norm())


def test_scaling_alone_keeps_the_float_model(host, model, calibration, held_out):
    dense = logits(model, held_out)
    before = {name: p.detach().clone() for name, p in model.model.named_parameters()}
    details = awq_(model, host.adapter_for(model), calibration, AWQConfig(bits=3, group_size=None), quantize=False)
    changed = {name for name, p in model.model.named_parameters() if not torch.equal(p, before[name])}
    # every site of every block was scaled: both norms and q..down moved, embeddings did not
    assert set(details["alpha"]) == {"attention input", "attention output", "mlp input", "mlp output"}
    assert not details["not_scaled"]
    assert "model.layers.3.post_attention_layernorm.weight" in changed
    assert "model.layers.3.mlp.down_proj.weight" in changed and "model.embed_tokens.weight" not in changed
    assert not any(isinstance(m, QuantizedLinear) for m in model.model.modules())
    assert relative(logits(model, held_out), dense) < 1e-5


def test_o_scales_are_tied_across_query_heads_sharing_a_v_head(host, model, calibration):
    """8 query heads read 4 v heads: o's columns of query heads 2g and 2g+1 get one scale, which
    v's row of head g absorbs (otherwise the fold would not be exact)."""
    blocks = model.model.model.layers
    originals = [block.self_attn.o_proj.weight.detach().clone() for block in blocks]
    awq_(model, host.adapter_for(model), calibration, AWQConfig(bits=3, group_size=None), quantize=False)
    spread = []
    for block, original in zip(blocks, originals, strict=True):
        ratio = (block.self_attn.o_proj.weight.detach() / original).mean(dim=0).view(4, 2, 8)  # [kv head, repeat, dim]
        torch.testing.assert_close(ratio[:, 0], ratio[:, 1], rtol=1e-5, atol=0)
        spread.append(float(ratio.std()))
    assert max(spread) > 1e-3  # and the search did scale some block's o (the check above is not vacuous)


@pytest.mark.parametrize("bits", [3, 4])
def test_layer_error_on_calibration_data_is_below_rtn(host, calibration, bits, compress):
    """Block 0's MLP (its norm, gate/up and down) fed the same captured float inputs: AWQ's output
    is closer to the dense output than RTN's with the same per-channel grid."""
    models = {kind: load_model("example:stories260K") for kind in ("dense", "rtn", "awq")}
    compress(models["rtn"], "quantize.rtn", {"bits": bits, "group_size": None})
    details = awq_(models["awq"], host.adapter_for(models["awq"]), calibration,
                   AWQConfig(bits=bits, group_size=None))
    captured = []
    layer = models["dense"].model.model.layers[0]
    handle = layer.post_attention_layernorm.register_forward_pre_hook(lambda m, a: captured.append(a[0]))
    logits(models["dense"], calibration.input_ids)
    handle.remove()
    x = torch.cat(captured)

    def mlp(kind):
        block = models[kind].model.model.layers[0]
        with torch.no_grad():
            return block.mlp(block.post_attention_layernorm(x))

    dense = mlp("dense")
    rtn, awq = relative(mlp("rtn"), dense), relative(mlp("awq"), dense)
    assert awq < 0.9 * rtn, (awq, rtn)
    # the method's own per-layer figures agree: every scaled-and-clipped layer beats RTN
    for name in ("model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj",
                 "model.layers.2.self_attn.v_proj", "model.layers.2.self_attn.o_proj"):
        assert details["output_error"][name]["awq"] < details["output_error"][name]["rtn"], name


@pytest.mark.parametrize("params", [{"bits": 4, "group_size": None}, {"bits": 3, "group_size": 4}],
                         ids=["int4-per-channel", "int3-g4"])
def test_held_out_perplexity_not_worse_than_rtn(host, calibration, held_out, params, compress):
    dense = load_model("example:stories260K")
    nll = {}
    for method in ("quantize.rtn", "quantize.awq"):
        model = load_model("example:stories260K")
        summary = compress(model, method, params, calibration)
        with torch.no_grad():
            nll[method] = float(model.model(held_out, labels=held_out).loss)
        nll[method + " logits"] = relative(logits(model, held_out), logits(dense, held_out))
        assert sum(isinstance(m, QuantizedLinear) for m in model.model.modules()) == 35
    assert nll["quantize.awq"] <= nll["quantize.rtn"]
    assert nll["quantize.awq logits"] <= nll["quantize.rtn logits"]
    assert summary.details["mean_output_error"]["awq"] < summary.details["mean_output_error"]["rtn"]


def test_clip_search_never_loses_to_the_full_range():
    """Per row and group the chosen ratio's output error is at most the unclipped one's (ratio
    1.0 is among those tried), checked against a direct per-token computation."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(256, 16, generator=generator) * torch.linspace(0.1, 3.0, 16)
    weight = torch.randn(6, 16, generator=generator)
    weight[0, 3] = 8.0  # an outlier the search should clip
    grid = AWQConfig(bits=3, group_size=4).grid()
    best = search_clip(weight, x, grid, clip_ratios(0.5))
    assert best.shape == (6, 4) and 0.5 <= float(best.min()) < 1.0

    from slimkit.plugins.quantization.awq import _fake

    def group_errors(clip):
        delta = (weight - _fake(weight, grid, clip)).reshape(6, 4, 4)
        return torch.einsum("ngk,rgk->nrg", x.reshape(256, 4, 4), delta).square().sum(dim=0)

    assert bool((group_errors(best) <= group_errors(1.0) * (1 + 1e-5)).all())


def test_recipe_saves_and_reloads_the_quantized_model(host, tmp_path):
    recipe = Recipe.from_data({"calibration": {"n_samples": 4, "seq_len": 64, "seed": 0},
                               "steps": [{"method": "quantize.awq", "params": {"bits": 4, "group_size": 4}}]})
    result = run_recipe(recipe, "example:stories260K", out=tmp_path / "awq", host=host, catalogue=False)
    assert "AWQ" in result.steps[0].summary
    reloaded = load_model(tmp_path / "awq")
    ids = torch.tensor([[1, 15, 40, 99, 3, 7]])
    torch.testing.assert_close(logits(reloaded, ids), logits(result.model, ids), rtol=0, atol=1e-5)


def test_no_calibration_is_refused(host, model):
    info = host.compressors.get("quantize.awq")
    config = host.config(info, {"group_size": None})
    with pytest.raises(ConfigError, match="needs calibration data"):
        info.create().check(model, host.adapter_for(model), config, host.context())
    recipe = Recipe.from_data({"steps": [{"method": "quantize.awq", "params": {"group_size": None}}]})
    with pytest.raises(RecipeError, match="calibration"):
        run_recipe(recipe, "example:stories260K", host=host, catalogue=False)


@pytest.mark.parametrize("params", [{"alpha_grid": 0}, {"clip_min": 0.0}, {"clip_min": 1.5}, {"max_tokens": 1},
                                    {"bits": 5}, {"group_size": 128}])
def test_bad_parameters_are_refused(host, model, calibration, params):
    info = host.compressors.get("quantize.awq")
    with pytest.raises(ConfigError):
        config = host.config(info, params)
        info.create().check(model, host.adapter_for(model), config, host.context(calibration=calibration))


class OnePlusNorm(nn.Module):
    """A Gemma-style norm, ``x * (1 + weight)``: dividing its weight does not divide its output."""

    def __init__(self, width):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(width))

    def forward(self, x):
        return x * (1 + self.weight)


def test_norm_that_cannot_absorb_scales_is_refused(host, model, calibration):
    model.model.model.layers[2].post_attention_layernorm = OnePlusNorm(64)
    info = host.compressors.get("quantize.awq")
    with pytest.raises(ArchitectureError, match="post_attention_layernorm.*cannot be folded"):
        info.create().check(model, host.adapter_for(model), host.config(info, {"group_size": None}),
                            host.context(calibration=calibration))


def test_post_norm_blocks_are_refused_before_anything_changes(host):
    torch.manual_seed(0)
    bert = LoadedModel(model=transformers.BertModel(transformers.BertConfig(
        vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=64)).eval())
    before = {name: p.detach().clone() for name, p in bert.model.named_parameters()}
    ids = torch.randint(3, 96, (4, 16), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ArchitectureError, match="does not read the output of .*LayerNorm"):
        awq_(bert, host.adapter_for(bert), CalibrationData(ids, "test", "random", 0), AWQConfig(group_size=None))
    assert all(torch.equal(p, before[name]) for name, p in bert.model.named_parameters())


def test_fused_qkv_and_ungated_mlp_fold_where_they_can(host):
    """GPT-2: ln_1 -> fused c_attn and ln_2 -> c_fc are scaled (LayerNorm bias included, Conv1D
    weights transposed); v inside c_attn and the GELU MLP's output cannot be, and say why."""
    torch.manual_seed(0)
    gpt2 = LoadedModel(model=transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0)).eval())
    ids = torch.randint(3, 96, (4, 32), generator=torch.Generator().manual_seed(0))
    dense = logits(gpt2, ids)
    details = awq_(gpt2, host.adapter_for(gpt2), CalibrationData(ids, "test", "random", 0),
                   AWQConfig(bits=3, group_size=None), quantize=False)
    assert set(details["not_scaled"]) == {"attention output", "mlp output"}
    assert "fused" in details["not_scaled"]["attention output"]
    assert relative(logits(gpt2, ids), dense) < 1e-5
