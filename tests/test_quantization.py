"""RTN and GPTQ on the bundled model: real storage, reload, error orderings, chains, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from slimkit import Recipe, load_model, run_recipe
from slimkit.core.errors import ArchitectureError, ModelLoadError, RecipeError
from slimkit.core.quant.formats import QuantGrid, dequantize, grid_params, quantize
from slimkit.core.quant.modules import QuantizedLinear
from slimkit.core.quant.modules import fp16_exact
from slimkit.plugins.quantization.gptq import gptq_quantize

CALIBRATION = {"n_samples": 16, "seq_len": 128, "seed": 0}


def run(host, steps, out=None, calibration=True, model="example:stories260K"):
    data = {"steps": steps, **({"calibration": CALIBRATION} if calibration else {})}
    return run_recipe(Recipe.from_data(data), model, host=host, catalogue=False, out=out)


def logits(model, ids):
    with torch.no_grad():
        return model.model(ids, use_cache=False).logits


IDS = torch.randint(0, 512, (2, 40), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("params", [
    {"bits": 8, "group_size": None},
    {"bits": 4, "group_size": 4, "embeddings": "int8"},
    {"bits": 3, "group_size": None, "symmetric": False},
], ids=["int8", "int4-g4-emb8", "int3-asym"])
def test_rtn_saves_packed_and_reloads_to_identical_outputs(host, tmp_path, params):
    result = run(host, [{"method": "quantize.rtn", "params": params}], out=tmp_path / "q", calibration=False)
    quantized = [m for m in result.model.model.modules() if isinstance(m, QuantizedLinear)]
    assert len(quantized) == 35 + (1 if params.get("embeddings") else 0)  # 5 blocks x 7 (+ the tied head)
    reloaded = load_model(tmp_path / "q")
    assert torch.equal(logits(result.model, IDS), logits(reloaded, IDS))
    section = json.loads((tmp_path / "q" / "slimkit.json").read_text())["modules"]
    assert section["layers"]["model.layers.0.mlp.down_proj"]["bits"] == params["bits"]
    # the weights file really holds packed codes: about bits/32 of the float layers' bytes
    dense = load_model("example:stories260K").model
    block_bytes = sum(p.numel() for n, p in dense.named_parameters() if ".layers." in n and p.dim() == 2) * 4
    stored = sum(t.numel() * t.element_size() for k, t in reloaded.model.state_dict().items()
                 if ".layers." in k and k.endswith("qweight"))
    assert stored == pytest.approx(block_bytes * params["bits"] / 32, rel=0.01)


def test_plain_transformers_refuses_the_quantized_folder_and_dequantize_exports_one(host, tmp_path):
    from transformers import AutoModelForCausalLM

    result = run(host, [{"method": "quantize.rtn", "params": {"bits": 4, "group_size": 4, "embeddings": "int8"}}],
                 out=tmp_path / "q", calibration=False)
    with pytest.raises(OSError, match="model.safetensors"):  # no float weights to misread
        AutoModelForCausalLM.from_pretrained(tmp_path / "q")
    exported = run(host, [{"method": "dequantize"}], out=tmp_path / "f", calibration=False, model=str(tmp_path / "q"))
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "f")
    with torch.no_grad():
        torch.testing.assert_close(plain(IDS).logits, logits(result.model, IDS), rtol=1e-4, atol=1e-4)
    assert [s.method for s in exported.steps] == ["dequantize"]


def test_a_folder_saved_in_the_first_format_still_loads(host, tmp_path):
    """Quantized folders written before low-rank layers existed: a ``quantization`` section
    (format 1) and ``quantized.safetensors``."""
    result = run(host, [{"method": "quantize.rtn", "params": {"bits": 4, "group_size": 4}}], out=tmp_path / "q",
                 calibration=False)
    provenance_file = tmp_path / "q" / "slimkit.json"
    provenance = json.loads(provenance_file.read_text())
    section = provenance.pop("modules")
    section.update(format=1, file="quantized.safetensors")
    provenance["quantization"] = section
    provenance_file.write_text(json.dumps(provenance))
    (tmp_path / "q" / "slimkit.safetensors").rename(tmp_path / "q" / "quantized.safetensors")
    assert torch.equal(logits(load_model(tmp_path / "q"), IDS), logits(result.model, IDS))


def test_tampered_or_truncated_weights_are_detected(host, tmp_path):
    run(host, [{"method": "quantize.rtn", "params": {"bits": 4, "group_size": 4}}], out=tmp_path / "q",
        calibration=False)
    file = tmp_path / "q" / "slimkit.safetensors"
    data = bytearray(file.read_bytes())
    data[-100] ^= 0x01  # one bit inside the last tensor's bytes
    file.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="does not match its recorded SHA-256"):
        load_model(tmp_path / "q")
    file.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        load_model(tmp_path / "q")


def _layer_and_inputs(model, calibration_rows=2048):
    """A real layer of the bundled model and float64 inputs it sees."""
    from slimkit.core.data import TextSource, calibration_samples
    from slimkit.core.model_io import example_text

    data = calibration_samples(model.tokenizer, TextSource(example_text()), n_samples=16, seq_len=128, seed=0)
    seen = []
    layer = model.model.model.layers[1].mlp.down_proj
    handle = layer.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    with torch.no_grad():
        model.model(data.input_ids, use_cache=False)
    handle.remove()
    x = torch.cat(seen).reshape(-1, layer.in_features).double()
    return layer.weight.detach().clone(), x


@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_layer_error_below_rtn(model, act_order):
    weight, x = _layer_and_inputs(model)
    H = x.T @ x
    grid = QuantGrid(3, 4, False)
    codes, scale, zero = gptq_quantize(weight, H.clone(), grid, act_order=act_order)
    gptq_w = dequantize(codes, scale, zero)
    s, z = grid_params(weight, grid)
    s = fp16_exact(s)
    rtn_w = dequantize(quantize(weight, s, z, grid), s, z)

    def error(w):
        return float(((x @ (w.double() - weight.double()).T) ** 2).sum())

    assert error(gptq_w) < 0.8 * error(rtn_w)
    assert int(codes.max()) <= grid.max_code and scale.dtype == torch.float32


def test_gptq_stacked_rows_equal_separate_layers(model):
    weight, x = _layer_and_inputs(model)
    H = x.T @ x
    grid = QuantGrid(4, None, True)
    together = gptq_quantize(weight, H.clone(), grid)
    top = gptq_quantize(weight[:30], H.clone(), grid)
    bottom = gptq_quantize(weight[30:], H.clone(), grid)
    for whole, a, b in zip(together, top, bottom):
        assert torch.equal(whole, torch.cat([a, b]))


def test_sparsegpt_then_gptq_keeps_the_mask_as_two_steps(host, tmp_path):
    result = run(host, [
        {"method": "prune.sparsegpt", "params": {"sparsity": 0.5}},
        {"method": "quantize.gptq", "params": {"bits": 4, "group_size": 4}},
    ], out=tmp_path / "pq")
    assert [s.method for s in result.steps] == ["prune.sparsegpt", "quantize.gptq"]
    layers = [m for m in result.model.model.modules() if isinstance(m, QuantizedLinear)]
    zeros = sum(int((m.dequantized_weight() == 0).sum()) for m in layers)
    total = sum(m.in_features * m.out_features for m in layers)
    assert zeros / total >= 0.5  # every pruned weight is still exactly zero
    assert torch.equal(logits(load_model(tmp_path / "pq"), IDS), logits(result.model, IDS))


def test_gptq_beats_rtn_end_to_end(host):
    from slimkit.core.data import TextSource, calibration_samples
    from slimkit.core.model_io import example_text
    from slimkit.plugins.evaluators.perplexity import causal_lm_nll

    grid = {"bits": 3, "group_size": None, "symmetric": False}
    rtn = run(host, [{"method": "quantize.rtn", "params": grid}], calibration=False).model
    gptq = run(host, [{"method": "quantize.gptq", "params": grid}]).model
    held_out = calibration_samples(rtn.tokenizer, TextSource(example_text()), n_samples=16, seq_len=128, seed=7)
    nll = {}
    for name, m in (("rtn", rtn), ("gptq", gptq), ("dense", load_model("example:stories260K"))):
        with torch.no_grad():
            total, tokens = causal_lm_nll(m.model, held_out.input_ids)
        nll[name] = total / tokens
    assert nll["dense"] < nll["gptq"] < nll["rtn"], nll


def test_bad_quantization_input_is_refused_before_any_work(host):
    with pytest.raises(RecipeError, match="group_size 48 does not divide the inputs of .*\\(64\\)"):
        run(host, [{"method": "quantize.rtn", "params": {"group_size": 48}}], calibration=False)
    with pytest.raises(RecipeError, match="unsupported bit width 5"):
        run(host, [{"method": "quantize.rtn", "params": {"bits": 5}}], calibration=False)
    with pytest.raises(ArchitectureError, match="already quantized"):
        run(host, [{"method": "quantize.rtn", "params": {"group_size": None}},
                   {"method": "quantize.rtn", "params": {"group_size": None}}], calibration=False)
    with pytest.raises(ArchitectureError, match="already quantized"):
        run(host, [{"method": "quantize.rtn", "params": {"group_size": None}},
                   {"method": "prune.unstructured", "params": {"sparsity": 0.5}}], calibration=False)
    with pytest.raises(RecipeError, match="needs calibration data"):
        run(host, [{"method": "quantize.gptq", "params": {"group_size": None}}], calibration=False)


def test_size_counts_the_weights_quantized_layers_stand_for(host):
    dense = load_model("example:stories260K")
    quantized = run(host, [{"method": "quantize.rtn", "params": {"bits": 4, "group_size": 4, "embeddings": "int8"}}],
                    calibration=False).model
    size = host.evaluators.get("size")
    before = size.create().evaluate(dense, host.config(size, {}), host.context())
    after = size.create().evaluate(quantized, host.config(size, {}), host.context())
    assert after["params"] == before["params"]
    assert after["memory_bytes"] < 0.3 * before["memory_bytes"]
    no_embeddings = size.create().evaluate(quantized, host.config(size, {"include_embeddings": False}), host.context())
    dense_no_embeddings = size.create().evaluate(dense, host.config(size, {"include_embeddings": False}), host.context())
    assert no_embeddings["params"] == dense_no_embeddings["params"]
