"""compressed-tensors exports loaded by plain transformers (5.25 + compressed-tensors 0.20.1): the
same weights bit for bit and the same logits as slimkit's own forward; the loading path that works
for asymmetric grids, and a pin on the default path's failure so an upstream change is noticed.

Measured here (CPU, float32): every weight-only grid gives max |logit difference| 0.0 against
slimkit's forward (the loaded float weights are slimkit's dequantized weights exactly, and both
run the same float32 matmuls), on a random 2-block Llama, stories260K and SmolLM2-135M.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from ct_helpers import apply, ct_host, export, load_dequantized, load_plain, logits, quantized_layers, tiny_llama

import slimkit
from slimkit import to_dense

pytest.importorskip("compressed_tensors", reason="the test extras install compressed-tensors")

EXACT = 1e-5  # float32 rounding; measured 0.0 everywhere


@pytest.fixture
def host():
    return ct_host()


def assert_same_model(loaded, model) -> float:
    """Every quantized layer's loaded weight is slimkit's dequantized weight, bit for bit, and the
    logits agree to float32 rounding; returns the max |logit difference|. (compressed-tensors
    decompresses the layers on the first forward: the weights exist after it.)"""
    difference = (logits(loaded) - logits(model.model)).abs().max().item()
    for name, layer in quantized_layers(model).items():
        assert torch.equal(loaded.get_submodule(name).weight, layer.dequantized_weight()), name
    assert difference <= EXACT, difference
    return difference


@pytest.mark.parametrize("bits,group_size", [(4, 32), (4, 64), (4, None), (8, None), (2, 32)],
                         ids=["int4-g32", "int4-g64", "int4-channel", "int8-channel", "int2-g32"])
def test_symmetric_grids_load_in_plain_transformers_as_slimkit_runs_them(host, tmp_path, bits, group_size):
    model = apply(host, tiny_llama(), "quantize.rtn", {"bits": bits, "group_size": group_size})
    export(host, model, tmp_path / "ct")
    assert_same_model(load_plain(tmp_path / "ct"), model)


def test_the_bundled_model_with_int8_embeddings_loads_exactly(host, tmp_path):
    """stories260K (172-wide MLP: rows padded to int32 words), int4 g4, its table and tied head
    int8: the table goes out dequantized (exact), the head stays tied to it."""
    model = apply(host, slimkit.load_model("example:stories260K"), "quantize.rtn",
                  {"bits": 4, "group_size": 4, "embeddings": "int8"})
    result = export(host, model, tmp_path / "ct")
    assert result.summary.details["dequantized"] == ["lm_head", "model.embed_tokens"]
    assert result.summary.details["tied_head"] is True
    loaded = load_plain(tmp_path / "ct")
    assert torch.equal(loaded.model.embed_tokens.weight, model.model.model.embed_tokens.weight)
    assert_same_model(loaded, model)


@pytest.mark.parametrize("method", ["quantize.gptq", pytest.param("quantize.awq", marks=pytest.mark.slow)])
def test_calibrated_quantizers_and_an_untied_head_export_exactly(host, tmp_path, method):
    model = apply(host, tiny_llama(tie=False), method, {"bits": 4, "group_size": 64}, calibration=_calibration())
    export(host, model, tmp_path / "ct")
    config = json.loads((tmp_path / "ct" / "config.json").read_text())
    assert config["tie_word_embeddings"] is False and "lm_head" in config["quantization_config"]["ignore"]
    assert_same_model(load_plain(tmp_path / "ct"), model)


def _calibration():
    from slimkit import CalibrationData

    ids = torch.randint(0, 512, (8, 64), generator=torch.Generator().manual_seed(1))
    return CalibrationData(ids, fingerprint="random", source="random tokens", seed=1)


@pytest.mark.parametrize("bits,group_size", [(4, 32), (4, None), (8, 64)], ids=["int4-g32", "int4-channel", "int8-g64"])
def test_asymmetric_grids_load_with_dequantize_true_or_the_transformers_layout(host, tmp_path, bits, group_size):
    model = apply(host, tiny_llama(), "quantize.rtn", {"bits": bits, "group_size": group_size, "symmetric": False})
    export(host, model, tmp_path / "packed")
    assert_same_model(load_dequantized(tmp_path / "packed"), model)
    export(host, model, tmp_path / "padded", zero_point_layout="transformers")
    assert_same_model(load_plain(tmp_path / "padded"), model)
    assert_same_model(load_dequantized(tmp_path / "padded"), model)


def test_slimkit_loads_any_compressed_tensors_folder_as_its_float_weights(host, tmp_path):
    # slimkit.load_model takes the path that loads every grid (dequantize=True), as it dequantizes
    # a GGUF, and drops the quantization marker so the model saves and compresses as float
    model = apply(host, tiny_llama(), "quantize.rtn", {"bits": 4, "group_size": 32, "symmetric": False})
    export(host, model, tmp_path / "ct")
    loaded = slimkit.load_model(tmp_path / "ct")
    assert_same_model(loaded.model, model)
    assert not hasattr(loaded.model.config, "quantization_config") and loaded.model.hf_quantizer is None
    slimkit.save_model(loaded, tmp_path / "resaved", {})
    assert "quantization_config" not in (tmp_path / "resaved" / "config.json").read_text()


def test_pin_plain_from_pretrained_fails_on_packed_asymmetric_zero_points(host, tmp_path):
    """transformers 5.25 + compressed-tensors 0.20.1 allocate each zero point unpacked, [out, groups],
    before loading (their meta-device compression skips packing it), so the packed [out*bits/32,
    groups] tensors every compressed-tensors writer produces do not fit. If this test fails, the
    default path changed: update docs/export_compressed_tensors.md and notes.loading_notes."""
    import compressed_tensors
    import transformers

    versions = f"transformers {transformers.__version__} + compressed-tensors {compressed_tensors.__version__}"
    model = apply(host, tiny_llama(), "quantize.rtn", {"bits": 4, "group_size": 32, "symmetric": False})
    export(host, model, tmp_path / "ct")
    try:
        loaded = load_plain(tmp_path / "ct")
    except RuntimeError as error:
        assert "ignore_mismatched_sizes" in str(error), f"{versions} now fail differently: {error}"
    else:
        logits(loaded)  # decompresses
        worked = all(torch.equal(loaded.get_submodule(n).weight, layer.dequantized_weight())
                     for n, layer in quantized_layers(model).items())
        pytest.fail(f"{versions} now load packed asymmetric zero points by default "
                    f"({'correctly' if worked else 'but WRONG weights'}): update the docs and the loading notes")
    _, info = load_plain(tmp_path / "ct", ignore_mismatched_sizes=True, output_loading_info=True)
    mismatched = {key: (tuple(ckpt), tuple(allocated)) for key, ckpt, allocated in info["mismatched_keys"]}
    expected = {f"{name}.weight_zero_point": ((layer.out_features * 4 // 32, layer.scales.shape[1]),
                                              tuple(layer.scales.shape))
                for name, layer in quantized_layers(model).items()}
    assert mismatched == expected, f"{versions}: the zero points no longer fail the same way"


def test_smoothquant_w8a8_loads_as_int_quantized_with_its_activation_rule(host, tmp_path, calibration):
    """The weights are bit-exact; transformers fake-quantizes each token's activations with
    compressed-tensors' rule (scale max|x| / 127.5 over [-128, 127]), slimkit and vLLM with
    max|x| / 127 over [-127, 127]. Measured on stories260K, 32 tokens: transformers equals a float
    model with compressed-tensors' rule (max diff 0.0), equals slimkit's dequantized float forward
    with activation quantization off (0.0), and against slimkit's int8-dynamic forward the same
    greedy tokens, mean |log p(next token) difference| 0.013 (max |logit difference| 0.53 of
    logits up to ~16: a rounding boundary flipped in an early layer carries through)."""
    model = slimkit.load_model("example:stories260K")
    apply(host, model, "quantize.smoothquant", {}, calibration=calibration)
    result = export(host, model, tmp_path / "ct")
    assert result.summary.details["format"] == "int-quantized"
    loaded = load_plain(tmp_path / "ct")
    ids = torch.tensor([model.tokenizer.encode("Once upon a time there was a little girl named Lily. She loved to "
                                               "play outside in the park with her")])
    theirs, ours = logits(loaded, ids), logits(model.model, ids)
    for name, layer in quantized_layers(model).items():
        assert torch.equal(loaded.get_submodule(name).weight, layer.dequantized_weight()), name
    dense = to_dense(copy.deepcopy(model.model))
    for name in quantized_layers(model):
        dense.get_submodule(name).register_forward_pre_hook(_compressed_tensors_int8_tokens)
    assert (theirs - logits(dense, ids)).abs().max().item() <= EXACT
    assert torch.equal(theirs.argmax(-1), ours.argmax(-1))
    targets = ids[0, 1:, None]
    gap = (theirs.log_softmax(-1)[0, :-1].gather(1, targets) - ours.log_softmax(-1)[0, :-1].gather(1, targets))
    assert gap.abs().mean().item() < 0.05
    for module in loaded.modules():
        if hasattr(module, "quantization_scheme"):
            module.quantization_enabled = False
    assert (logits(loaded, ids) - logits(to_dense(copy.deepcopy(model.model)), ids)).abs().max().item() <= EXACT


def _compressed_tensors_int8_tokens(module, args):
    x = args[0]
    scale = x.abs().amax(dim=-1, keepdim=True) / 127.5
    scale = torch.where(scale == 0, torch.finfo(scale.dtype).eps, scale)
    return (torch.clamp(torch.round(x / scale), -128, 127) * scale,)


def test_pruned_float_model_is_a_plain_folder_and_states_its_sparsity_when_asked(host, tmp_path):
    model = apply(host, slimkit.load_model("example:stories260K"), "prune.nm", {"n": 2, "m": 4})
    result = export(host, model, tmp_path / "plain")
    config = json.loads((tmp_path / "plain" / "config.json").read_text())
    assert "quantization_config" not in config and result.summary.details["sparsity"] is None
    assert torch.equal(logits(load_plain(tmp_path / "plain")), logits(model.model))
    result = export(host, model, tmp_path / "stated", sparsity_config="always")
    section = json.loads((tmp_path / "stated" / "config.json").read_text())["quantization_config"]
    assert section["format"] == "dense" and section["config_groups"] == {}
    assert section["sparsity_config"]["sparsity_structure"] == "2:4"
    assert section["sparsity_config"]["global_sparsity"] == 0.5 and section["sparsity_config"]["ignore"] == ["lm_head"]
    assert torch.equal(logits(load_plain(tmp_path / "stated")), logits(model.model))


def test_pruned_then_quantized_states_two_four_sparsity(host, tmp_path):
    model = apply(host, tiny_llama(), "prune.nm", {"n": 2, "m": 4})
    apply(host, model, "quantize.rtn", {"bits": 8, "group_size": None})
    result = export(host, model, tmp_path / "ct")
    section = json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]
    assert section["sparsity_config"]["sparsity_structure"] == "2:4" and section["sparsity_config"]["format"] == "dense"
    assert result.summary.details["sparsity"]["layers"] == 14
    assert_same_model(load_plain(tmp_path / "ct"), model)
    dense = apply(host, tiny_llama(), "quantize.rtn", {"bits": 4, "group_size": 32})  # zeros from rounding only
    export(host, dense, tmp_path / "dense")
    assert json.loads((tmp_path / "dense" / "config.json").read_text())["quantization_config"]["sparsity_config"] == {}


def test_two_four_w8a8_layers_are_not_stated_unless_asked(host, tmp_path, calibration):
    """vLLM sends 2:4 W8A8 layers to its 2:4 scheme (removed in 2026): stated only with 'always'."""
    model = apply(host, slimkit.load_model("example:stories260K"), "prune.nm", {"n": 2, "m": 4})
    apply(host, model, "quantize.smoothquant", {}, calibration=calibration)
    export(host, model, tmp_path / "default")
    assert json.loads((tmp_path / "default" / "config.json").read_text())["quantization_config"]["sparsity_config"] == {}
    result = export(host, model, tmp_path / "always", sparsity_config="always")
    assert "2:4 kernels" in result.summary.details["loading"]["vllm"]
    stated = json.loads((tmp_path / "always" / "config.json").read_text())["quantization_config"]["sparsity_config"]
    assert stated["sparsity_structure"] == "2:4" and stated["ignore"] == ["lm_head"]


@pytest.mark.slow
@pytest.mark.assets
def test_smollm2_rtn_int4_g64_loads_in_transformers_with_the_same_logits(host, tmp_path, assets):
    gguf = assets / "smollm2-135m-instruct-q4_1" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not gguf.is_file():
        pytest.skip(f"{gguf} is absent")
    model = apply(host, slimkit.load_model(gguf), "quantize.rtn", {"bits": 4, "group_size": 64})
    export(host, model, tmp_path / "ct")
    loaded = load_plain(tmp_path / "ct")
    ids = torch.tensor([model.tokenizer.encode("The capital of France is Paris, the capital of Germany is Berlin, "
                                               "and the capital of Italy is")])
    assert ids.shape[1] > 16  # slimkit's forward takes its dequantize path, as the loader does
    difference = (logits(loaded, ids) - logits(model.model, ids)).abs().max().item()
    for name, layer in quantized_layers(model).items():
        assert torch.equal(loaded.get_submodule(name).weight, layer.dequantized_weight()), name
    assert difference <= EXACT, difference
