"""The compressed-tensors exporter's files: the packing order against compressed-tensors' own
helpers, slimkit's codes and scales written as stored, a config compressed-tensors accepts, the
lineage in the folder, and the refusals."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from ct_helpers import FORMAT, apply, ct_host, export, load_plain, logits, quantized_layers, tiny_llama

import slimkit
from slimkit import EXPORT_CONTENT_ID_KEY, ExportError, QuantGrid, QuantizedLinear
from slimkit.plugins.export.compressed_tensors.plugin import CompressedTensorsExporter
from slimkit.plugins.export.compressed_tensors.tensors import pack_columns, weight_packed

pytest.importorskip("compressed_tensors", reason="the test extras install compressed-tensors")
from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32, unpack_from_int32  # noqa: E402
from compressed_tensors.quantization import QuantizationConfig  # noqa: E402


@pytest.fixture
def host():
    return ct_host()


def random_layer(bits: int, columns: int, symmetric: bool = True, rows: int = 6, seed: int = 0) -> QuantizedLinear:
    generator = torch.Generator().manual_seed(seed)
    grid = QuantGrid(bits, None, symmetric)
    codes = torch.randint(0, 1 << bits, (rows, columns), generator=generator, dtype=torch.int32).to(torch.uint8)
    scale = (torch.rand(rows, 1, generator=generator) + 0.5).half().float()
    zero = torch.randint(0, 1 << bits, (rows, 1), generator=generator).float()
    return QuantizedLinear.from_codes(codes, scale, zero if not symmetric else torch.full_like(scale, 1 << (bits - 1)),
                                      grid)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("columns", [9, 40, 64, 172])
def test_slimkit_rows_are_compressed_tensors_words(bits, columns):
    """slimkit's packed rows, cut or padded to int32 words, are what pack_to_int32 makes of the
    same codes (signed, offset by 2^(bits-1)), and unpack_from_int32 gives the codes back."""
    layer = random_layer(bits, columns)
    codes = layer.codes()
    signed = (codes.to(torch.int16) - (1 << (bits - 1))).to(torch.int8)
    ours = weight_packed(layer)
    assert torch.equal(ours, pack_to_int32(signed, bits))
    back = unpack_from_int32(ours, bits, torch.Size([codes.shape[0], columns]))
    assert torch.equal(back.to(torch.int16) + (1 << (bits - 1)), codes.to(torch.int16))


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_zero_points_pack_along_the_outputs_as_compressed_tensors_does(bits):
    zeros = torch.randint(0, 1 << bits, (43, 5), generator=torch.Generator().manual_seed(bits), dtype=torch.int32)
    ours = pack_columns(zeros.to(torch.uint8).t().contiguous(), bits).t()
    theirs = pack_to_int32((zeros - (1 << (bits - 1))).to(torch.int8), bits, packed_dim=0)
    assert torch.equal(ours, theirs)


def test_the_folder_holds_slimkits_codes_and_scales_as_stored(host, tmp_path):
    from safetensors.torch import load_file

    model = apply(host, tiny_llama(), "quantize.rtn", {"bits": 4, "group_size": 32, "symmetric": False})
    result = export(host, model, tmp_path / "ct")
    stored = load_file(str(tmp_path / "ct" / "model.safetensors"))
    for name, layer in quantized_layers(model).items():
        raw = stored[f"{name}.weight_packed"].contiguous().view(torch.uint8)
        assert torch.equal(raw, layer.qweight)  # 128 inputs: 64 bytes a row either way, byte for byte
        assert stored[f"{name}.weight_scale"].dtype == torch.float32
        assert torch.equal(stored[f"{name}.weight_scale"].half(), layer.scales)  # float32 copies of float16
        assert stored[f"{name}.weight_shape"].tolist() == [layer.out_features, layer.in_features]
        assert stored[f"{name}.weight_zero_point"].shape == (layer.out_features * 4 // 32, layer.scales.shape[1])
        assert f"{name}.weight" not in stored
    assert "lm_head.weight" not in stored  # tied to the table: written once
    assert result.summary.details["layers"] == {"int4 asym g32": 14}


def test_config_is_one_compressed_tensors_accepts_and_the_lineage_travels(host, tmp_path):
    model = apply(host, slimkit.load_model("example:stories260K"), "quantize.rtn", {"bits": 8, "group_size": None})
    result = export(host, model, tmp_path / "ct")
    folder = tmp_path / "ct"
    config = json.loads((folder / "config.json").read_text())
    section = QuantizationConfig.model_validate(config["quantization_config"])
    assert section.quantization_status == "compressed" and section.format == "pack-quantized"
    group = section.config_groups["group_0"]
    assert group.targets == ["Linear"] and group.weights.strategy == "channel" and group.weights.num_bits == 8
    assert group.input_activations is None and section.ignore == ["lm_head"]
    assert config["slimkit_content_id"] == result.content_id
    document = json.loads((folder / "slimkit.json").read_text())
    assert document[EXPORT_CONTENT_ID_KEY] == result.content_id and document["export"]["format"] == FORMAT
    assert "modules" not in document and "quantization" not in document  # not slimkit's own storage
    assert {"tokenizer.json", "generation_config.json", "model.safetensors"} <= {p.name for p in folder.iterdir()}
    assert CompressedTensorsExporter.identify(folder) == result.content_id
    copied = shutil.copytree(folder, tmp_path / "elsewhere" / "copy")
    assert CompressedTensorsExporter.identify(copied) == result.content_id
    (copied / "slimkit.json").unlink()  # config.json still carries it
    assert CompressedTensorsExporter.identify(copied) == result.content_id
    # slimkit reads the export back as an ordinary Hugging Face folder, lineage included
    reloaded = slimkit.load_model(folder)
    assert reloaded.provenance[EXPORT_CONTENT_ID_KEY] == result.content_id
    assert reloaded.tokenizer.encode("Once upon a time") == model.tokenizer.encode("Once upon a time")
    assert torch.equal(logits(reloaded.model), logits(model.model))


def test_identify_says_none_for_anything_else(host, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.json").write_text("{}")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "slimkit.json").write_text("{not json")
    (broken / "config.json").write_bytes(b"\xff\xfe")
    saved = slimkit.save_model(slimkit.load_model("example:stories260K"), tmp_path / "saved", {"content_id": "x"})
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "slimkit.json").write_text(json.dumps({EXPORT_CONTENT_ID_KEY: "sha256:12", "export": {"format": FORMAT}}))
    for path in (tmp_path / "empty", tmp_path / "file.json", broken, saved, wrong, tmp_path / "absent"):
        assert CompressedTensorsExporter.identify(path) is None, path


def test_every_refusal_is_listed_before_anything_is_written(host, tmp_path):
    model = slimkit.load_model("example:stories260K")
    apply(host, model, "lowrank.svd", {"roles": ["up"], "rank": 4})
    apply(host, model, "quantize.rtn", {"bits": 3, "group_size": 4, "roles": ["q", "k", "v", "o", "gate", "down"]})
    with pytest.raises(ExportError) as caught:
        export(host, model, tmp_path / "ct")
    lines = caught.value.problems
    assert len(lines) == 2, lines
    assert "model.layers.0.mlp.up_proj (and 4 more) is low-rank" in lines[0] and "densify" in lines[0]
    assert "model.layers.0.self_attn.q_proj (and 29 more) is int3" in lines[1] and "dense_3bit=true" in lines[1]
    assert list(tmp_path.iterdir()) == []  # nothing written, no staging folder left


def test_per_layer_widths_a_config_cannot_state_are_refused(host, tmp_path):
    model = tiny_llama()
    block = model.model.model.layers[1].mlp
    block.up_proj = torch.nn.Linear(128, 128, bias=False)  # one block narrower than the config says
    block.gate_proj = torch.nn.Linear(128, 128, bias=False)
    block.down_proj = torch.nn.Linear(128, 128, bias=False)
    with pytest.raises(ExportError) as caught:
        export(host, model, tmp_path / "ct")
    assert caught.value.problems == [
        "model.layers.1.mlp.down_proj.weight (and 2 more) is 128x128 here but 128x256 in the LlamaForCausalLM its "
        "config describes (per-layer widths a transformers config cannot state?): transformers could not load the "
        "export; keep slimkit's own format, or export to gguf"]


def test_a_class_transformers_does_not_know_is_refused(host, tmp_path):
    from transformers import LlamaForCausalLM

    class MyLlama(LlamaForCausalLM):
        pass

    model = tiny_llama()
    model.model.__class__ = MyLlama
    with pytest.raises(ExportError, match="MyLlama is not a transformers model class"):
        export(host, model, tmp_path / "ct")


def test_three_bit_grids_export_when_asked_and_load_exactly(host, tmp_path):
    model = apply(host, slimkit.load_model("example:stories260K"), "quantize.rtn", {"bits": 3, "group_size": 4})
    result = export(host, model, tmp_path / "ct", dense_3bit=True)
    assert "other widths" in result.summary.details["loading"]["vllm"]
    loaded = load_plain(tmp_path / "ct")
    assert torch.equal(logits(loaded), logits(model.model))


def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=512, n_positions=64)
    return slimkit.LoadedModel(GPT2LMHeadModel(config).eval(), None, "tiny-gpt2")


def test_quantized_conv1d_layers_are_refused_with_what_works(host, tmp_path):
    model = apply(host, tiny_gpt2(), "quantize.rtn", {"bits": 8, "group_size": None})
    with pytest.raises(ExportError) as caught:
        export(host, model, tmp_path / "ct")
    assert caught.value.problems == [
        "transformer.h.0.attn.c_attn (and 7 more) is a Conv1D in GPT2LMHeadModel, not an nn.Linear: "
        "compressed-tensors quantizes nn.Linear layers only; dequantize the model first (its float export then "
        "loads) or export to gguf"]


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
def test_structurally_shrunk_float_models_are_plain_folders_that_load(host, tmp_path, make):
    model = apply(host, make(), "prune.neurons", {"fraction": 0.25})
    result = export(host, model, tmp_path / "ct")
    assert result.summary.details["format"] == "float"
    config = json.loads((tmp_path / "ct" / "config.json").read_text())
    assert "quantization_config" not in config
    assert config.get("intermediate_size", config.get("n_inner")) == 192  # 256 neurons less a quarter
    assert torch.equal(logits(load_plain(tmp_path / "ct")), logits(model.model))


def test_float_tensors_in_bfloat16_and_the_size_estimate(host, tmp_path):
    from safetensors.torch import load_file

    model = apply(host, tiny_llama(), "quantize.rtn", {"bits": 4, "group_size": 64, "symmetric": False})
    exporter = CompressedTensorsExporter()
    config = host.config(host.exporters.get(FORMAT), {"dtype": "bfloat16"})
    estimate = exporter.estimated_bytes(model, config)
    export(host, model, tmp_path / "ct", dtype="bfloat16")
    stored = load_file(str(tmp_path / "ct" / "model.safetensors"))
    assert stored["model.embed_tokens.weight"].dtype == torch.bfloat16
    assert stored["model.layers.0.mlp.up_proj.weight_scale"].dtype == torch.float32  # scales stay exact
    assert json.loads((tmp_path / "ct" / "config.json").read_text())["dtype"] == "bfloat16"
    actual = (tmp_path / "ct" / "model.safetensors").stat().st_size
    assert 0.9 * actual <= estimate <= 1.1 * actual, (estimate, actual)


@pytest.mark.parametrize("bits,symmetric", [(2, True), (3, False), (4, True), (4, False), (8, True), (8, False)])
def test_the_sparsity_probe_reads_codes_as_slimkit_does(bits, symmetric):
    from slimkit.plugins.export.compressed_tensors.tensors import first_codes

    layer = random_layer(bits, 172, symmetric, rows=20)
    assert torch.equal(first_codes(layer, 16), layer.codes()[:16].to(torch.int32))
