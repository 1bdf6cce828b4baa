"""The gguf exporter, read back with gguf-py itself: slimkit's codes land in the GGUF blocks bit for
bit (Q4_0, Q8_0, float types; Q4_1 within its stated float16 bound), the Q/K rope permutation
undone gives slimkit's rows, every refusal names the layer and what works and writes nothing,
the tokenizer metadata is right, and ``identify`` reads the content id back (``None`` for any
other file). Running the files in llama.cpp is tests/test_export_gguf_llamacpp.py."""

from __future__ import annotations

import json
import struct

import pytest
import torch

import slimkit
from slimkit import ExportError, LowRankLinear, export_model, make_host, set_module

gguf = pytest.importorskip("gguf")

from slimkit.plugins.export.gguf.layout import rope_permutation  # noqa: E402
from slimkit.plugins.export.gguf.plugin import GGUFExporter  # noqa: E402
from slimkit.plugins.export.gguf.tensors import Codes, q4_1_bound  # noqa: E402

NOT_DOWN = ["q", "k", "v", "o", "gate", "up"]  # stories260K's down_proj has 172 inputs: no 32-blocks


@pytest.fixture
def host():
    return make_host(load_entrypoints=False)


def compress(host, model, method, params, calibration=None):
    info = host.compressors.get(method)
    config = host.config(info, params)
    adapter = host.adapter_for(model)
    compressor = info.create()
    compressor.check(model, adapter, config, host.context(calibration=calibration))
    compressor.compress_(model, adapter, config, host.context(calibration=calibration))
    return model


def read(path):
    """GGUF tensor name -> (type name, float32 values [rows, cols]) dequantized by gguf-py."""
    out = {}
    for tensor in gguf.GGUFReader(path).tensors:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
        out[tensor.name] = (tensor.tensor_type.name, torch.from_numpy(values.copy()).reshape(shape))
    return out


def expected(module, kind: str) -> torch.Tensor:
    """slimkit's weight as the file must hold it: quantized layers dequantized (float32), float
    ones rounded as the GGUF float type rounds."""
    if getattr(module, "grid", None) is not None:
        return module.dequantized_weight() if hasattr(module, "codes") else module.weight
    weight = module.weight.detach().float()
    return {"F16": weight.half().float(), "BF16": weight.bfloat16().float()}.get(kind, weight)


def per_layer(model, host, tensors):
    """``(gguf name, slimkit module name, slimkit weight, file weight with the rope permutation
    undone, file type)`` for every block projection."""
    layout = host.adapter_for(model).layout(model.model)
    names = {"q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output", "gate": "ffn_gate",
             "up": "ffn_up", "down": "ffn_down"}
    for block in layout.blocks:
        for ref in block.linears():
            name = f"blk.{block.index}.{names[ref.role]}.weight"
            kind, values = tensors[name]
            heads = {"q": block.attention.num_heads, "k": block.attention.num_kv_heads}.get(ref.role)
            if heads:
                values = values[torch.argsort(rope_permutation(values.shape[0], heads))]
            yield name, ref.name, expected(ref.module, kind), values, kind


def assert_bit_exact(model, host, path, types):
    tensors = read(path)
    seen = set()
    for name, source, want, got, kind in per_layer(model, host, tensors):
        if kind == "Q4_1":
            continue
        seen.add(kind)
        assert torch.equal(got, want), f"{name} ({source}, {kind}) differs from slimkit's weights"
    assert seen >= set(types), seen
    layout = host.adapter_for(model).layout(model.model)
    table = model.model.get_submodule(layout.embeddings[0])
    kind, values = tensors["token_embd.weight"]
    assert torch.equal(values, expected(table, kind)), "token embedding differs"
    for block in layout.blocks:
        for norm, gguf_name in zip(block.norms, ("attn_norm", "ffn_norm")):
            kind, values = tensors[f"blk.{block.index}.{gguf_name}.weight"]
            assert kind == "F32" and torch.equal(values, model.model.get_submodule(norm).weight.detach())
    return tensors


@pytest.mark.parametrize("params, types", [
    ({"bits": 4, "group_size": 32, "roles": NOT_DOWN}, {"Q4_0", "F16"}),
    ({"bits": 4, "group_size": 64, "roles": NOT_DOWN}, {"Q4_0"}),  # two blocks share each scale
    ({"bits": 4, "group_size": None, "roles": NOT_DOWN}, {"Q4_0"}),  # one scale per row
    ({"bits": 8, "group_size": None, "roles": NOT_DOWN, "embeddings": "int8"}, {"Q8_0"}),
    ({"bits": 8, "group_size": 32, "roles": NOT_DOWN}, {"Q8_0"}),
])
def test_rtn_codes_land_in_the_blocks_bit_for_bit(host, model, tmp_path, params, types):
    compress(host, model, "quantize.rtn", params)
    result = export_model(model, tmp_path / "m.gguf", format="gguf", host=host)
    tensors = assert_bit_exact(model, host, result.path, types)
    assert "output.weight" not in tensors  # stories260K's head is tied: llama.cpp reuses token_embd
    if params.get("embeddings") == "int8":
        assert tensors["token_embd.weight"][0] == "Q8_0"
        raw = next(t for t in gguf.GGUFReader(result.path).tensors if t.name == "blk.0.attn_q.weight")
        codes = raw.data.reshape(-1, 34)[:, 2:].view("int8")
        assert codes.min() == -128  # slimkit's grid uses the extra negative code; Q8_0 holds it
    assert result.summary.details["float_projections"] == [f"model.layers.{i}.mlp.down_proj" for i in range(5)]
    assert ("5 block projection(s) went out as float (5 with rows that are not a multiple of 32, which no "
            "block type holds)") in result.summary.description


@pytest.mark.parametrize("requantize", [False, True])
def test_summary_says_why_projections_went_out_as_float(host, model, tmp_path, requantize):
    compress(host, model, "quantize.rtn", {"bits": 4, "group_size": 32, "roles": ["q", "k", "v"]})
    result = export_model(model, tmp_path / "m.gguf", format="gguf", host=host, params={"requantize": requantize})
    text = result.summary.description
    if requantize:  # o, gate and up (64 inputs) re-quantized; down (172) cannot be
        assert "went out as float (5 with rows that are not a multiple of 32" in text
        assert "left unquantized" not in text
    else:
        assert "20 block projection(s) went out as float (15 left unquantized by slimkit; requantize=true would " \
               "quantize them; 5 with rows that are not a multiple of 32" in text


def test_gptq_codes_land_in_q4_0_bit_for_bit(host, model, calibration, tmp_path):
    compress(host, model, "quantize.gptq", {"bits": 4, "group_size": 32, "roles": NOT_DOWN}, calibration)
    result = export_model(model, tmp_path / "m.gguf", format="gguf", host=host, params={"float_type": "F32"})
    assert_bit_exact(model, host, result.path, {"Q4_0", "F32"})


def test_q4_1_holds_asymmetric_codes_within_the_float16_bound(host, model, tmp_path):
    compress(host, model, "quantize.rtn", {"bits": 4, "group_size": 32, "symmetric": False, "roles": NOT_DOWN})
    result = export_model(model, tmp_path / "m.gguf", format="gguf", host=host)
    tensors = read(result.path)
    raw = {t.name: t for t in gguf.GGUFReader(result.path).tensors}
    worst, exact = 0.0, 0
    total = 0
    for name, source, want, got, kind in per_layer(model, host, tensors):
        if kind != "Q4_1":
            continue
        module = model.model.get_submodule(source)
        assert (got - want).abs().le(q4_1_bound(Codes.of(module))).all(), name
        steps = (got - want).abs() / module.scales.float().repeat_interleave(32, dim=1)
        worst = max(worst, float(steps.max()))
        exact += int((got == want).sum())
        total += got.numel()
        # d is slimkit's float16 scale, copied: the first two bytes of every block
        blocks = raw[name].data.reshape(-1, 20)
        d = torch.from_numpy(blocks[:, :2].copy().view("float16").reshape(want.shape[0], -1).astype("float32"))
        if name.endswith(("attn_q.weight", "attn_k.weight")):
            heads = 8 if "attn_q" in name else 4
            d = d[torch.argsort(rope_permutation(want.shape[0], heads))]
        assert torch.equal(d, module.scales.float())
    assert 0 < worst < 15 / 2048 + 1e-6  # under zero/2048 of a step (zero <= 15)
    assert 0 < exact < total


def test_float_types_and_dequantized_weights(host, model, tmp_path):
    compress(host, model, "quantize.rtn", {"bits": 4, "group_size": 32, "roles": NOT_DOWN})
    exact = export_model(model, tmp_path / "f32.gguf", format="gguf", host=host, params={"weights": "F32"})
    assert_bit_exact(model, host, exact.path, {"F32"})
    assert exact.summary.details["tensors"]["F32 dequantized"] == 30
    bf16 = export_model(model, tmp_path / "bf16.gguf", format="gguf", host=host, params={"float_type": "BF16"})
    assert_bit_exact(model, host, bf16.path, {"Q4_0", "BF16"})


def test_explicit_block_types_hold_other_grids_exactly(host, tmp_path):
    """Q8_0 holds int4 codes exactly; Q4_0 holds 3-bit symmetric ones (auto refuses 3 bits)."""
    for params, weights in (({"bits": 4, "group_size": 32, "symmetric": False}, "Q8_0"),
                            ({"bits": 3, "group_size": 32}, "Q4_0"),
                            ({"bits": 2, "group_size": 64}, "Q8_0")):
        model = slimkit.load_model("example:stories260K")
        compress(host, model, "quantize.rtn", {**params, "roles": NOT_DOWN})
        result = export_model(model, tmp_path / f"{weights}-{params['bits']}.gguf", format="gguf", host=host,
                              params={"weights": weights})
        assert_bit_exact(model, host, result.path, {weights})


def test_requantize_uses_ggufs_reference_quantizer_only_when_asked(host, model, tmp_path):
    compress(host, model, "quantize.rtn", {"bits": 4, "group_size": 32, "roles": ["q", "k", "v"]})
    plain = export_model(model, tmp_path / "plain.gguf", format="gguf", host=host)
    assert plain.summary.details["tensors"]["F16 float"] == 1 + 20  # the embedding and o/gate/up/down
    result = export_model(model, tmp_path / "r.gguf", format="gguf", host=host, params={"requantize": True})
    raw = {t.name: t for t in gguf.GGUFReader(result.path).tensors}
    for i in range(5):
        weight = model.model.model.layers[i].mlp.up_proj.weight.detach().float().numpy()
        assert raw[f"blk.{i}.ffn_up.weight"].tensor_type.name == "Q4_0"
        assert (raw[f"blk.{i}.ffn_up.weight"].data == gguf.quants.quantize(weight, gguf.GGMLQuantizationType.Q4_0)).all()
        assert raw[f"blk.{i}.ffn_down.weight"].tensor_type.name == "F16"  # 172 inputs: stays float
    assert result.summary.details["tensors"]["Q4_0 requantized"] == 15


def test_embedding_and_head_types_as_asked(host, model, tmp_path):
    result = export_model(model, tmp_path / "m.gguf", format="gguf", host=host,
                          params={"embedding": "F32", "head": "Q8_0"})
    raw = {t.name: t for t in gguf.GGUFReader(result.path).tensors}
    table = model.model.model.embed_tokens.weight.detach().float().numpy()
    assert raw["token_embd.weight"].tensor_type.name == "F32"
    assert raw["output.weight"].tensor_type.name == "Q8_0"  # a tied head untied, as asked
    assert (raw["output.weight"].data == gguf.quants.quantize(table, gguf.GGMLQuantizationType.Q8_0)).all()
    same = export_model(model, tmp_path / "tied.gguf", format="gguf", host=host, params={"head": "F16"})
    assert "output.weight" not in {t.name for t in gguf.GGUFReader(same.path).tensors}  # same type: stays tied


def test_header_follows_llama_cpps_converter(host, model, tmp_path):
    result = export_model(model, tmp_path / "m.gguf", format="gguf", host=host)
    fields = gguf.GGUFReader(result.path).fields
    value = {key: fields[key].contents() for key in fields}
    config = model.config
    assert value["general.architecture"] == "llama"
    assert value["llama.block_count"] == 5 and value["llama.embedding_length"] == 64
    assert value["llama.feed_forward_length"] == 172 and value["llama.context_length"] == 512
    assert value["llama.attention.head_count"] == 8 and value["llama.attention.head_count_kv"] == 4
    assert value["llama.rope.dimension_count"] == 8 and value["llama.vocab_size"] == 512
    assert value["llama.rope.freq_base"] == 10000.0
    assert value["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(config.rms_norm_eps)
    assert value["general.file_type"] == int(gguf.LlamaFileType.MOSTLY_F16)
    assert value["slimkit.content_id"] == result.content_id
    assert GGUFExporter.identify(result.path) == result.content_id


def test_rope_permutation_interleaves_the_halves_of_each_head():
    perm = rope_permutation(8, 2)  # two heads of 4: [a0 a1 b0 b1] -> [a0 b0 a1 b1]
    assert perm.tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


# -- per-block shapes: deci -----------------------------------------------------------------------


def uneven(host, model):
    """stories260K pruned by slimkit's structured pruner's own shrinking, differently per block:
    MLP widths 172, 160, ..., 124 and one key/value group fewer in block 1."""
    from slimkit.plugins.pruning.structured import shrink_attention_, shrink_mlp_

    layout = host.adapter_for(model).layout(model.model)
    for block in layout.blocks:
        shrink_mlp_(block.mlp, torch.arange(172 - 12 * block.index))
    shrink_attention_(layout.blocks[1].attention, torch.tensor([0, 2, 3]))
    return model


def test_per_block_shapes_go_out_as_deci_with_per_block_arrays(host, model, tmp_path):
    uneven(host, model)
    compress(host, model, "quantize.rtn", {"bits": 4, "group_size": 32, "roles": ["q", "k", "v", "gate", "up"]})
    result = export_model(model, tmp_path / "d.gguf", format="gguf", host=host)
    fields = gguf.GGUFReader(result.path).fields
    assert fields["general.architecture"].contents() == "deci"
    assert fields["deci.feed_forward_length"].contents() == [172, 160, 148, 136, 124]
    assert fields["deci.attention.head_count"].contents() == [8, 6, 8, 8, 8]
    assert fields["deci.attention.head_count_kv"].contents() == [4, 3, 4, 4, 4]
    assert_bit_exact(model, host, result.path, {"Q4_0", "F16"})
    with pytest.raises(ExportError) as refused:
        export_model(model, tmp_path / "l.gguf", format="gguf", host=host, params={"architecture": "llama"})
    assert "use architecture=deci or auto" in str(refused.value)
    assert not (tmp_path / "l.gguf").exists()


def test_uniform_structured_pruning_stays_llama(host, model, tmp_path):
    info = host.compressors.get("prune.neurons")
    info.create().compress_(model, host.adapter_for(model), host.config(info, {"fraction": 0.25}), host.context())
    result = export_model(model, tmp_path / "p.gguf", format="gguf", host=host)
    fields = gguf.GGUFReader(result.path).fields
    assert fields["general.architecture"].contents() == "llama"
    assert fields["llama.feed_forward_length"].contents() == 129


# -- refusals -------------------------------------------------------------------------------------


def refused(host, model, tmp_path, params=None):
    target = tmp_path / "refused.gguf"
    with pytest.raises(ExportError) as error:
        export_model(model, target, format="gguf", host=host, params=params)
    assert not target.exists() and list(tmp_path.iterdir()) == []  # nothing written, no staging file left
    problems = error.value.problems
    assert all("\n" not in line for line in problems)
    return problems


def test_refuses_low_rank_layers_naming_densify(host, model, tmp_path):
    factorised = LowRankLinear.from_factors(torch.randn(64, 8), torch.randn(8, 64))
    set_module(model.model, "model.layers.2.self_attn.o_proj", factorised)
    (problem,) = refused(host, model, tmp_path)
    assert "model.layers.2.self_attn.o_proj" in problem and "lowrank.densify" in problem


@pytest.mark.parametrize("params, words", [
    ({"bits": 3, "group_size": 32}, ["int3 sym g32", "no GGUF type stores 3-bit", "weights=Q4_0"]),
    ({"bits": 2, "group_size": 32, "symmetric": False}, ["2-bit", "weights=Q4_1"]),
    ({"bits": 4, "group_size": 16}, ["group size 16", "32, 64 or per channel"]),
    ({"bits": 8, "group_size": None, "symmetric": False}, ["int8 asym", "Q8_0 has no zero point", "weights=F32"]),
])
def test_refuses_grids_no_gguf_type_holds(host, model, tmp_path, params, words):
    compress(host, model, "quantize.rtn", {**params, "roles": NOT_DOWN})
    problems = refused(host, model, tmp_path)
    assert len(problems) == 30  # every quantized layer, each named
    assert "model.layers.0.self_attn.q_proj" in problems[0]
    for word in words:
        assert word in problems[0], problems[0]


def test_refuses_rows_that_are_no_multiple_of_32(host, model, tmp_path):
    compress(host, model, "quantize.rtn", {"bits": 4, "group_size": None})
    problems = refused(host, model, tmp_path)
    assert [p.split(" ")[0] for p in problems] == [f"model.layers.{i}.mlp.down_proj" for i in range(5)]
    assert "rows of 172 inputs" in problems[0] and "roles" in problems[0]


def test_refuses_q4_0_for_asymmetric_layers(host, model, tmp_path):
    compress(host, model, "quantize.rtn", {"bits": 4, "group_size": 32, "symmetric": False, "roles": NOT_DOWN})
    problems = refused(host, model, tmp_path, {"weights": "Q4_0"})
    assert "cannot be written as Q4_0" in problems[0] and "Q4_1 holds them" in problems[0]


def test_refuses_other_architectures_and_impossible_options(host, model, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = slimkit.LoadedModel(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64)).eval(),
                               model.tokenizer, "tiny-gpt2")
    (problem,) = refused(host, gpt2, tmp_path)
    assert "model types llama, mistral" in problem and "GPT2LMHeadModel" in problem
    assert "requantize=true needs a block type" in refused(host, model, tmp_path, {"weights": "F16", "requantize": True})[0]
    assert "model has none" in refused(host, model, tmp_path, {"requantize": True})[0]
    assert "tokenizer=gguf" in refused(host, model, tmp_path, {"tokenizer": "gguf"})[0]
    assert "no such GGUF file" in refused(host, model, tmp_path, {"tokenizer": str(tmp_path / "none.gguf")})[0]


# -- identify and lineage ----------------------------------------------------------------------------


def test_identify_reads_the_content_id_and_nothing_else(host, model, tmp_path):
    result = export_model(model, tmp_path / "m.gguf", format="gguf", host=host)
    assert result.content_id.startswith("sha256:")
    copied = tmp_path / "elsewhere" / "copy.gguf"
    copied.parent.mkdir()
    copied.write_bytes(result.path.read_bytes())
    assert GGUFExporter.identify(copied) == result.content_id
    plain = tmp_path / "plain.gguf"  # a GGUF without slimkit's key
    writer = gguf.GGUFWriter(plain, "llama")
    writer.add_block_count(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    (tmp_path / "text.gguf").write_text("not a model")
    (tmp_path / "cut.gguf").write_bytes(result.path.read_bytes()[:40])  # magic, then cut inside the keys
    (tmp_path / "v9.gguf").write_bytes(b"GGUF" + struct.pack("<I", 9) + bytes(64))
    for other in ("plain.gguf", "text.gguf", "cut.gguf", "v9.gguf", "missing.gguf", "elsewhere"):
        assert GGUFExporter.identify(tmp_path / other) is None, other


def test_lineage_travels_in_the_metadata(host, tmp_path):
    recipe = slimkit.Recipe.from_data({"steps": [
        {"method": "quantize.rtn", "params": {"bits": 4, "group_size": 32, "roles": NOT_DOWN}}]})
    run = slimkit.run_recipe(recipe, "example:stories260K", out=tmp_path / "q", host=host, catalogue=False)
    derived = slimkit.load_model(tmp_path / "q")
    result = export_model(derived, tmp_path / "q.gguf", format="gguf", host=host)
    fields = gguf.GGUFReader(result.path).fields
    lineage = json.loads(fields["slimkit.provenance"].contents())
    assert lineage == derived.provenance
    assert lineage["content_id"] == result.content_id == run.provenance["content_id"]
    assert [step["method"] for step in lineage["steps"]] == ["quantize.rtn"]
    assert_bit_exact(derived, host, result.path, {"Q4_0"})


# -- tokenizer metadata --------------------------------------------------------------------------------


def tokenizer_fields(path):
    fields = gguf.GGUFReader(path).fields
    return {key: fields[key].contents() for key in fields if key.startswith("tokenizer.")}


def test_tokenizer_is_copied_from_a_gguf_byte_for_byte(host, model, tmp_path):
    first = export_model(model, tmp_path / "a.gguf", format="gguf", host=host)
    again = export_model(model, tmp_path / "b.gguf", format="gguf", host=host,
                         params={"tokenizer": str(first.path)})
    assert again.summary.details["tokenizer"] == "copied from a.gguf"
    assert tokenizer_fields(again.path) == tokenizer_fields(first.path)


@pytest.mark.assets
def test_sentencepiece_scores_rebuilt_from_tokenizer_json_are_the_original_ones(host, model, tmp_path, assets):
    """The bundled stories260K has only tokenizer.json; the scores rebuilt from its merges equal
    the original SentencePiece scores (llama2.c's tok512.bin), which llama.cpp merges by."""
    blob = (assets / "stories260K" / "llama2c" / "tok512.bin").read_bytes()
    scores, at = [], 4
    while at < len(blob):
        score, size = struct.unpack_from("<fi", blob, at)
        scores.append(score)
        at += 8 + size
    result = export_model(model, tmp_path / "m.gguf", format="gguf", host=host)
    fields = tokenizer_fields(result.path)
    assert fields["tokenizer.ggml.model"] == "llama"
    assert fields["tokenizer.ggml.scores"] == pytest.approx(scores, abs=0)
    types = fields["tokenizer.ggml.token_type"]
    assert types[:3] == [2, 3, 3] and set(types[3:259]) == {6} and set(types[259:]) == {1}  # unk, bos/eos, bytes


@pytest.mark.assets
def test_byte_level_bpe_converts_like_llama_cpps_own_file(assets):
    """SmolLM2's Hugging Face tokenizer, converted, lists the tokens, types and merges of the
    GGUF llama.cpp's converter made for it (the pre-tokenizer: the regex of its tokenizer.json,
    gpt-2; that file names it smollm)."""
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from slimkit.plugins.export.gguf.vocab import from_hf

    folder = assets / "smollm2-135m-instruct-q4_1"
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    converted, problems = from_hf(SimpleNamespace(tokenizer=tokenizer, config=None), 49152)
    assert not problems and converted is not None
    source = tokenizer_fields(folder / "SmolLM2-135M-Instruct.Q4_1.gguf")
    mine = {key: value.value for key, value in converted.fields.items()}
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                "tokenizer.ggml.add_bos_token"):
        assert (mine[key].decode() if isinstance(mine[key], bytes) else mine[key]) == source[key], key
    assert [t.decode() for t in mine["tokenizer.ggml.tokens"]] == source["tokenizer.ggml.tokens"]
    assert mine["tokenizer.ggml.token_type"] == source["tokenizer.ggml.token_type"]
    assert mine["tokenizer.ggml.merges"] == source["tokenizer.ggml.merges"]
    assert mine["tokenizer.ggml.pre"] == "gpt-2" and source["tokenizer.ggml.pre"] == "smollm"


def test_the_file_loads_back_through_transformers_gguf_reader_with_slimkits_logits(host, model, tmp_path):
    """An independent reader of the whole layout: transformers' GGUF loader (behind slimkit.load_model)
    undoes the rope permutation itself and dequantizes with gguf-py; the logits are slimkit's."""
    compress(host, model, "quantize.rtn", {"bits": 4, "group_size": 32, "roles": NOT_DOWN})
    result = export_model(model, tmp_path / "m.gguf", format="gguf", host=host, params={"float_type": "F32"})
    loaded = slimkit.load_model(result.path)
    ids = torch.randint(0, 512, (2, 40), generator=torch.Generator().manual_seed(0))  # > 16 rows: dequantize path
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, model.model(ids).logits)


def test_a_model_derived_from_a_gguf_copies_its_tokenizer(host, model, tmp_path):
    base = export_model(model, tmp_path / "base.gguf", format="gguf", host=host, params={"float_type": "F32"})
    recipe = slimkit.Recipe.from_data({"steps": [
        {"method": "quantize.rtn", "params": {"bits": 4, "group_size": 32, "roles": ["q", "k", "v"]}}]})
    slimkit.run_recipe(recipe, str(base.path), out=tmp_path / "derived", host=host, catalogue=False)
    derived = slimkit.load_model(tmp_path / "derived")
    assert derived.provenance["base"]["source"] == str(base.path)
    result = export_model(derived, tmp_path / "derived.gguf", format="gguf", host=host)
    assert result.summary.details["tokenizer"] == "copied from base.gguf"
    assert tokenizer_fields(result.path) == tokenizer_fields(base.path)
    hf = export_model(derived, tmp_path / "hf.gguf", format="gguf", host=host, params={"tokenizer": "hf"})
    assert hf.summary.details["tokenizer"].startswith("converted from the Hugging Face tokenizer")


def test_tokenizers_that_cannot_be_converted_are_refused(host, model, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(512)}
    unigram = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    unigram.pre_tokenizer = pre_tokenizers.Whitespace()
    model.tokenizer = PreTrainedTokenizerFast(tokenizer_object=unigram, unk_token="w0")
    (problem,) = refused(host, model, tmp_path, {"tokenizer": "hf"})
    assert problem.startswith("tokenizer: a WordLevel tokenizer") and "tokenizer=PATH.gguf" in problem
    model.tokenizer = None
    (problem,) = refused(host, model, tmp_path)
    assert "has no tokenizer" in problem


def test_metadata_reader_agrees_with_gguf_py(host, model, tmp_path):
    from slimkit.plugins.export.gguf.metadata import read_metadata

    result = export_model(model, tmp_path / "m.gguf", format="gguf", host=host)
    mine = read_metadata(result.path)
    reference = gguf.GGUFReader(result.path).fields
    assert set(mine) == {key for key in reference if not key.startswith("GGUF.")}
    for key, value in mine.items():
        got = value.value
        if isinstance(got, bytes):
            got = got.decode()
        elif isinstance(got, list):
            got = [item.decode() if isinstance(item, bytes) else item for item in got]
        assert got == reference[key].contents(), key


def test_mistral_with_an_untied_head_goes_out_as_llama(host, model, tmp_path):
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                           sliding_window=None, tie_word_embeddings=False)
    mistral = slimkit.LoadedModel(MistralForCausalLM(config).eval(), model.tokenizer, "tiny-mistral")
    compress(host, mistral, "quantize.rtn", {"bits": 8, "group_size": 32})
    result = export_model(mistral, tmp_path / "m.gguf", format="gguf", host=host, params={"float_type": "F32"})
    tensors = assert_bit_exact(mistral, host, result.path, {"Q8_0"})
    assert tensors["output.weight"][0] == "F32"
    assert torch.equal(tensors["output.weight"][1], mistral.model.lm_head.weight.detach())
    loaded = slimkit.load_model(result.path)
    ids = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, mistral.model(ids).logits)
    windowed = slimkit.LoadedModel(MistralForCausalLM(MistralConfig(**{**config.to_dict(), "sliding_window": 64})),
                                   model.tokenizer, "windowed")
    (tmp_path / "w").mkdir()
    assert "sliding-window attention (window 64" in refused(host, windowed, tmp_path / "w")[0]
