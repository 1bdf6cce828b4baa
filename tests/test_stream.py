"""Block-streamed compression (``--stream``): the model is never whole in memory, and the result is
the in-memory run's, bit for bit (same content ids), in a normal sharded folder.

A tiny Llama with an untied head, written as three safetensors shards with an index, is the input;
each bundled streaming method runs once in memory and once streamed on it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import slimkit
from slimkit import BaseCompressor, CompressionSummary, ModelLoadError, Recipe, RecipeError, hookimpl, run_recipe
from slimkit.core.catalogue import Catalogue
from slimkit.core.failures import FileSystemError
from slimkit.core.preflight import OutputError
from slimkit.core.provenance import content_id
from slimkit.core.runtime import RuntimeSpec

STORIES = Path(slimkit.__file__).parent / "examples" / "stories260K"
STREAM = RuntimeSpec(stream=True)

METHODS = {
    "rtn": ("quantize.rtn", {"bits": 4, "group_size": 32}),
    "magnitude": ("prune.unstructured", {"sparsity": 0.5}),
    "wanda": ("prune.unstructured", {"sparsity": 0.5, "scorer": "wanda"}),
    "sparsegpt": ("prune.sparsegpt", {"sparsity": 0.5}),
    "gptq": ("quantize.gptq", {"bits": 4, "group_size": 32}),
    "awq": ("quantize.awq", {"bits": 4, "group_size": 32}),
    "mi-neurons": ("prune.neurons", {"scorer": "neurons.mi", "fraction": 0.25}),
}


def tiny_folder(folder: Path, *, layers: int = 3, tie: bool = False) -> Path:
    """A random Llama (stories260K's tokenizer, vocab 512) saved as several shards with an index."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=layers, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=512, max_position_embeddings=128,
                         tie_word_embeddings=tie)
    LlamaForCausalLM(config).save_pretrained(folder, max_shard_size="150KB")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(STORIES / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    folder = tiny_folder(tmp_path_factory.mktemp("tiny") / "model")
    assert (folder / "model.safetensors.index.json").is_file()
    return folder


def recipe(*steps: tuple[str, dict], **extra) -> Recipe:
    return Recipe.model_validate({"name": "streamed", "calibration": {"n_samples": 8, "seq_len": 64},
                                  "steps": [{"method": m, "params": p} for m, p in steps], **extra})


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("name", list(METHODS))
def test_streamed_run_equals_the_in_memory_run(name, source, tmp_path, host):
    method, params = METHODS[name]
    memory = run_recipe(recipe((method, params)), source, out=tmp_path / "memory", catalogue=False, host=host)
    streamed = run_recipe(recipe((method, params)), source, out=tmp_path / "streamed", catalogue=False,
                          host=host, runtime=STREAM)
    assert streamed.steps[0].child_id == memory.steps[0].child_id
    assert streamed.steps[0].summary == memory.steps[0].summary
    assert streamed.steps[0].versions["streamed"] == "block by block"
    reloaded = slimkit.load_model(tmp_path / "streamed")
    assert content_id(reloaded.model) == memory.steps[0].child_id
    files = sorted(p.name for p in (tmp_path / "streamed").glob("*.safetensors"))
    assert len(files) == 3 + 1  # one shard per block, one for the rest
    assert leftovers(tmp_path) == []  # no work folder left behind


@pytest.mark.parametrize("name", ["magnitude", "mi-neurons"])
def test_a_float_result_is_a_plain_sharded_folder(name, source, tmp_path, host):
    from transformers import LlamaForCausalLM

    method, params = METHODS[name]
    run_recipe(recipe((method, params)), source, out=tmp_path / "streamed", catalogue=False, host=host,
               runtime=STREAM)
    index = json.loads((tmp_path / "streamed" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {f"model-0000{i}-of-00004.safetensors" for i in range(1, 5)}
    memory = run_recipe(recipe((method, params)), source, catalogue=False, host=host)
    plain = LlamaForCausalLM.from_pretrained(tmp_path / "streamed").eval()
    ids = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(plain(ids).logits, memory.model.model(ids).logits)


def test_two_streamed_steps_chain_through_a_work_folder(source, tmp_path, host):
    steps = (METHODS["wanda"], METHODS["gptq"])
    memory = run_recipe(recipe(*steps), source, out=tmp_path / "memory", catalogue=False, host=host)
    streamed = run_recipe(recipe(*steps), source, out=tmp_path / "streamed", catalogue=False, host=host,
                          runtime=STREAM)
    assert [s.child_id for s in streamed.steps] == [s.child_id for s in memory.steps]
    assert leftovers(tmp_path) == []


def test_a_streamed_run_is_recorded_and_reused_by_an_in_memory_one(source, tmp_path, host):
    with Catalogue(str(tmp_path / "catalogue.db")) as cat:
        first = run_recipe(recipe(METHODS["gptq"]), source, out=tmp_path / "a", catalogue=cat, host=host,
                           runtime=STREAM)
        again = run_recipe(recipe(METHODS["gptq"]), source, out=tmp_path / "b", catalogue=cat, host=host)
        assert again.reused == [True]
        assert again.steps[0].child_id == first.steps[0].child_id
        assert cat.model(first.steps[0].child_id).location == str((tmp_path / "a").resolve())


class _Watcher(BaseCompressor):
    """Walks the blocks as a third-party streaming method would and notes how many blocks have
    real weights at each turn."""

    name = "test.watch"
    seen: list[int] = []

    def stream_refusal(self, config, ctx):
        return None

    def compress_(self, model, adapter, config, ctx):
        layout = adapter.layout(model.model)
        for block in ctx.blocks(model, adapter):
            real = [b.name for b in layout.blocks
                    if any(not p.is_meta for p in b.module.parameters())]
            type(self).seen.append(len(real))
            assert real == [block.name]
        return CompressionSummary("watched")


class _WatchPlugin:
    @hookimpl
    def register_compressors(self, register):
        register(_Watcher)


def test_one_block_at_a_time_has_weights(source, tmp_path, register_plugin):
    host = register_plugin(_WatchPlugin(), "watcher")
    _Watcher.seen.clear()
    run_recipe(recipe(("test.watch", {})), source, out=tmp_path / "out", catalogue=False, host=host, runtime=STREAM)
    assert _Watcher.seen == [1, 1, 1]


class _Replacer(BaseCompressor):
    """Replaces every linear by a copy as quantizers do, keeping the references to the old ones (as
    their lists of layers do): what a finished block's old layers hold is checked at every turn."""

    name = "test.replace"
    held: list[int] = []

    def stream_refusal(self, config, ctx):
        return None

    def compress_(self, model, adapter, config, ctx):
        from slimkit.core.architecture import set_module

        old = [ref for _, ref in adapter.layout(model.model).linears()]
        for block in ctx.blocks(model, adapter):
            type(self).held.append(sum(not ref.module.weight.is_meta for ref in old))
            for ref in block.linears():
                copy = torch.nn.Linear(ref.in_features, ref.out_features, bias=False)
                with torch.no_grad():
                    copy.weight.copy_(ref.module.weight)
                set_module(model.model, ref.name, copy)
        return CompressionSummary("replaced")


class _TableWatcher(BaseCompressor):
    """Walks the blocks on calibration data (the engine captures the first block's inputs through the
    token embedding) and notes, at each block, whether the embedding and the head hold weights."""

    name = "test.watch_tables"
    needs_calibration = True
    seen: list[tuple[bool, bool]] = []

    def stream_refusal(self, config, ctx):
        return None

    def compress_(self, model, adapter, config, ctx):
        from slimkit import SequentialCalibration

        tables = (model.model.get_input_embeddings(), model.model.get_output_embeddings())
        for step in SequentialCalibration(model, adapter, ctx.calibration):
            step.collect(list(step.block.linears())[:1], ("input_sq_sum",))
            type(self).seen.append(tuple(not t.weight.is_meta for t in tables))
        with model.stream.head_loaded():
            assert torch.equal(tables[1].weight, model.stream.source.read(["lm_head.weight"])["lm_head.weight"]
                               if "lm_head.weight" in model.stream.source else tables[0].weight)
            type(self).seen.append(tuple(not t.weight.is_meta for t in tables))
        return CompressionSummary("watched")


@pytest.mark.parametrize("tie", [False, True])
def test_the_embedding_and_head_are_filled_only_while_used(tie, tmp_path, register_plugin, host):
    folder = tiny_folder(tmp_path / "model", tie=tie)
    watcher = register_plugin(_TablePlugin(), "tables")
    _TableWatcher.seen.clear()
    streamed = run_recipe(recipe(("test.watch_tables", {})), folder, out=tmp_path / "out", catalogue=False,
                          host=watcher, runtime=STREAM)
    assert _TableWatcher.seen == [(False, False)] * 3 + [(tie, True)]  # tied: the head is the embedding
    model = slimkit.load_model(streamed.output)
    assert torch.equal(model.model.get_input_embeddings().weight, slimkit.load_model(folder).model.get_input_embeddings().weight)


class _TablePlugin:
    @hookimpl
    def register_compressors(self, register):
        register(_TableWatcher)


class _ReplacePlugin:
    @hookimpl
    def register_compressors(self, register):
        register(_Replacer)


def test_layers_a_method_replaced_are_emptied_with_their_block(source, tmp_path, register_plugin):
    """A quantizer replaces a block's linears and keeps a list of the old ones: their weights must
    not stay in memory (they did: a streamed 8B RTN run peaked at 16 GiB, the whole model)."""
    host = register_plugin(_ReplacePlugin(), "replacer")
    _Replacer.held.clear()
    run_recipe(recipe(("test.replace", {})), source, out=tmp_path / "out", catalogue=False, host=host,
               runtime=STREAM)
    assert _Replacer.held == [7, 7, 7]  # the present block's seven, never an earlier block's


class _Truncator(BaseCompressor):
    """Cuts the input's last shard short while the walk is at the first block."""

    name = "test.truncate"

    def stream_refusal(self, config, ctx):
        return None

    def compress_(self, model, adapter, config, ctx):
        for block in ctx.blocks(model, adapter):
            if block.index == 0:
                last = sorted(Path(model.path).glob("model-*.safetensors"))[-1]
                with last.open("r+b") as handle:
                    handle.truncate(last.stat().st_size // 2)
        return CompressionSummary("never")


class _TruncatePlugin:
    @hookimpl
    def register_compressors(self, register):
        register(_Truncator)


def test_a_shard_truncated_mid_run_is_one_clear_error(tmp_path, register_plugin):
    host = register_plugin(_TruncatePlugin(), "truncator")
    folder = tiny_folder(tmp_path / "model")
    with pytest.raises(ModelLoadError, match=r"was truncated during the run"):
        run_recipe(recipe(("test.truncate", {})), folder, out=tmp_path / "out", catalogue=False, host=host,
                   runtime=STREAM)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


# -- refused before any work -------------------------------------------------------------------------
@pytest.mark.parametrize("steps,evaluate,reason", [
    ([("prune.blocks", {"count": 1, "scorer": "blocks.cosine"})], [], r"prune.blocks.*cannot run streamed"),
    ([("prune.unstructured", {"scope": "global"})], [], r"scope global ranks all layers at once"),
    ([METHODS["rtn"]], [{"metric": "latency"}], r"evaluate 1 \(latency\) needs the model in memory"),
])
def test_what_cannot_stream_is_refused_before_work(steps, evaluate, reason, source, tmp_path, host):
    with pytest.raises(RecipeError, match=reason):
        run_recipe(recipe(*steps, evaluate=evaluate), source, out=tmp_path / "out", catalogue=False, host=host,
                   runtime=STREAM)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_streaming_needs_a_folder_and_somewhere_to_write(source, tmp_path, host):
    with pytest.raises(RecipeError, match="already in memory"):
        run_recipe(recipe(METHODS["rtn"]), slimkit.load_model(source), out=tmp_path / "o", catalogue=False,
                   host=host, runtime=STREAM)
    with pytest.raises(RecipeError, match="give it an output folder"):
        run_recipe(recipe(METHODS["rtn"]), source, catalogue=False, host=host, runtime=STREAM)


def _break(kind: str, folder: Path) -> str:
    if kind == "gguf":
        (folder / "m.gguf").write_bytes(b"GGUF" + bytes(60))
        return str(folder / "m.gguf")
    model = tiny_folder(folder / "model")
    shards = sorted(model.glob("model-*.safetensors"))
    if kind == "pickle":
        for file in [*shards, model / "model.safetensors.index.json"]:
            file.unlink()
        (model / "pytorch_model.bin").write_bytes(b"\x80\x04")
    elif kind == "missing":
        shards[1].unlink()
    elif kind == "truncated":
        with shards[1].open("r+b") as handle:
            handle.truncate(shards[1].stat().st_size - 100)
    return str(model)


@pytest.mark.parametrize("kind,message", [
    ("gguf", r"is a GGUF file; streaming reads a Hugging Face folder"),
    ("pickle", r"only pickle weights \(pytorch_model.bin\); streaming reads safetensors"),
    ("missing", r"model-00002-of-\d+.safetensors is missing \(its index lists it\)"),
    ("truncated", r"model-00002-of-\d+.safetensors is truncated: [\d,]+ bytes, its header says"),
])
def test_inputs_streaming_cannot_read(kind, message, tmp_path, host):
    spec = _break(kind, tmp_path)
    with pytest.raises(ModelLoadError, match=message):
        run_recipe(recipe(METHODS["rtn"]), spec, out=tmp_path / "out", catalogue=False, host=host, runtime=STREAM)
    assert not (tmp_path / "out").exists()


def test_a_quantized_folder_is_not_streamed(source, tmp_path, host):
    run_recipe(recipe(METHODS["rtn"]), source, out=tmp_path / "q", catalogue=False, host=host)
    with pytest.raises(ModelLoadError, match="layers slimkit replaced"):
        run_recipe(recipe(METHODS["magnitude"]), tmp_path / "q", out=tmp_path / "out", catalogue=False, host=host,
                   runtime=STREAM)


class _Filler(BaseCompressor):
    """Fills the output's file system (as another process might) while the walk is at block 0."""

    name = "test.fill"

    def stream_refusal(self, config, ctx):
        return None

    def compress_(self, model, adapter, config, ctx):
        for block in ctx.blocks(model, adapter):
            if block.index == 0:
                where = model.stream.output.parent
                free = shutil.disk_usage(where).free
                (where / "filler").write_bytes(bytes(max(0, free - 20_000)))
        return CompressionSummary("filled")


class _FillPlugin:
    @hookimpl
    def register_compressors(self, register):
        register(_Filler)


def test_a_disk_that_fills_up_while_shards_are_written(source, tmp_path, register_plugin, mount_tmpfs):
    host = register_plugin(_FillPlugin(), "filler")
    small = mount_tmpfs("small", "size=24m")
    with pytest.raises(FileSystemError, match=r"cannot write .*part-block-0000\d.safetensors: No space left on device"):
        run_recipe(recipe(("test.fill", {})), source, out=small / "out", catalogue=False, host=host, runtime=STREAM)
    assert not (small / "out").exists()
    assert sorted(p.name for p in small.iterdir()) == ["filler"]  # no work folder, no half-written shard


def test_too_little_room_for_the_result_is_said_before_work(source, tmp_path, host, mount_tmpfs):
    small = mount_tmpfs("small", "size=600k")
    with pytest.raises(OutputError, match=r"not enough free space"):
        run_recipe(recipe(METHODS["magnitude"]), source, out=small / "out", catalogue=False, host=host,
                   runtime=STREAM)


def test_cli_stream(source, tmp_path, monkeypatch):
    from slimkit.core.cli import make_cli

    main = make_cli()

    (tmp_path / "r.yaml").write_text(recipe(METHODS["gptq"]).to_yaml())
    monkeypatch.setenv("SLIMKIT_CATALOGUE", f"sqlite:///{tmp_path / 'cat.db'}")
    result = CliRunner().invoke(main, ["run", str(tmp_path / "r.yaml"), "-m", str(source), "--stream",
                                       "--out", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "saved" in result.output and (tmp_path / "out" / "slimkit.json").is_file()
    refused = CliRunner().invoke(main, ["run", str(tmp_path / "r.yaml"), "-m", str(tmp_path / "nothing"),
                                        "--stream", "--out", str(tmp_path / "out2"), "--no-progress"])
    assert refused.exit_code != 0
    assert "no such model folder" in refused.output and "Traceback" not in refused.output


def test_a_streamed_run_evaluates_its_result_streamed(source, tmp_path, host):
    evaluate = [{"metric": "perplexity", "params": {"seq_len": 64, "max_windows": 4}}]
    for name in ("magnitude", "gptq"):
        method, params = METHODS[name]
        memory = run_recipe(recipe((method, params), evaluate=evaluate), source, catalogue=False, host=host)
        streamed = run_recipe(recipe((method, params), evaluate=evaluate), source, out=tmp_path / name,
                              catalogue=False, host=host, runtime=STREAM)
        assert streamed.before == memory.before and streamed.after == memory.after
        assert streamed.after["perplexity"]["perplexity"] != streamed.before["perplexity"]["perplexity"]


def test_a_fully_reused_streamed_run_copies_the_catalogued_result(source, tmp_path, host):
    with Catalogue(str(tmp_path / "catalogue.db")) as cat:
        first = run_recipe(recipe(METHODS["rtn"]), source, out=tmp_path / "a", catalogue=cat, host=host,
                           runtime=STREAM)
        again = run_recipe(recipe(METHODS["rtn"]), source, out=tmp_path / "b", catalogue=cat, host=host,
                           runtime=STREAM)
        assert again.reused == [True]
    assert content_id(slimkit.load_model(tmp_path / "b").model) == first.steps[0].child_id
    assert (tmp_path / "a").is_dir() and leftovers(tmp_path) == []
