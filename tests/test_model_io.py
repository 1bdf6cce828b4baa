"""Loading models (example, folder, config.json, GGUF, hub id) and saving derived ones atomically."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers as tf

import slimkit
from slimkit.core.errors import ModelLoadError, OutputExistsError
from slimkit.core.model_io import LoadedModel, load_model, save_model
from slimkit.core.provenance import content_id

PROVENANCE = {"format": 1, "content_id": "sha256:test", "steps": [{"method": "noop"}], "note": "from a test"}
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}


def logits(model: torch.nn.Module, ids: torch.Tensor | None = None) -> torch.Tensor:
    ids = ids if ids is not None else torch.tensor([[1, 17, 42, 99, 250, 3, 7, 511]])
    with torch.no_grad():
        return model(input_ids=ids).logits


def hidden_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture
def stories_model() -> LoadedModel:
    return load_model("example:stories260K")


# -- loading ---------------------------------------------------------------------------------


def test_load_example(stories, stories_model):
    loaded = stories_model
    assert isinstance(loaded.model, tf.LlamaForCausalLM)
    assert loaded.architecture == "LlamaForCausalLM"
    assert loaded.tokenizer is not None
    assert loaded.tokenizer("Once upon a time")["input_ids"]
    assert loaded.source == "example:stories260K"
    assert loaded.path is not None and loaded.path.resolve() == stories.resolve()
    assert loaded.provenance is None
    assert not loaded.model.training
    assert loaded.config.num_hidden_layers == 5


@pytest.mark.parametrize("how", ["folder-str", "folder-path", "config.json"])
def test_load_by_path(stories, stories_model, how):
    spec = {"folder-str": str(stories), "folder-path": stories, "config.json": stories / "config.json"}[how]
    loaded = load_model(spec)
    assert isinstance(loaded.model, tf.LlamaForCausalLM)
    assert loaded.tokenizer is not None
    assert loaded.path is not None and loaded.path.resolve() == stories.resolve()
    torch.testing.assert_close(logits(loaded.model), logits(stories_model.model), rtol=0, atol=0)


# -- saving ----------------------------------------------------------------------------------


def test_save_reloads_with_plain_transformers(stories_model, tmp_path):
    before = content_id(stories_model.model)
    out = save_model(stories_model, tmp_path / "derived", PROVENANCE)
    assert out == tmp_path / "derived" and out.is_dir()
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "slimkit.json", "tokenizer.json"} <= names
    assert not [p for p in out.rglob("*") if p.suffix in PICKLE_SUFFIXES], names
    assert json.loads((out / "slimkit.json").read_text()) == PROVENANCE
    assert hidden_leftovers(tmp_path) == []

    plain = tf.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(plain) is tf.LlamaForCausalLM
    torch.testing.assert_close(logits(plain), logits(stories_model.model), rtol=0, atol=0)
    assert content_id(stories_model.model) == before  # saving does not touch the model
    assert content_id(plain) == before

    again = load_model(out)
    assert again.provenance == PROVENANCE
    assert again.tokenizer is not None
    assert content_id(again.model) == before
    assert content_id(again.model) == content_id(again.model)


def test_content_id_changes_with_weights(stories_model):
    before = content_id(stories_model.model)
    with torch.no_grad():
        stories_model.model.model.layers[0].mlp.up_proj.weight[0, 0] += 1.0
    assert content_id(stories_model.model) != before
    assert before.startswith("sha256:") and len(before) == len("sha256:") + 64


def test_content_id_of_scalar_parameters():
    module = torch.nn.Module()
    module.scale = torch.nn.Parameter(torch.tensor(2.0))  # e.g. CLIP's logit_scale
    assert content_id(module).startswith("sha256:")


@pytest.mark.parametrize("exception", [RuntimeError, KeyboardInterrupt])
def test_failed_save_leaves_nothing(stories_model, tmp_path, monkeypatch, exception):
    real_save = stories_model.model.save_pretrained

    def half_save(folder, *args, **kwargs):
        real_save(folder, *args, **kwargs)
        (Path(folder) / "half-written.txt").write_text("partial")
        raise exception("disk full")

    monkeypatch.setattr(stories_model.model, "save_pretrained", half_save)
    target = tmp_path / "derived"
    with pytest.raises(exception, match="disk full"):
        save_model(stories_model, target, PROVENANCE)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # no .derived.partial-* folder either


def test_existing_output_is_refused(stories_model, tmp_path):
    target = tmp_path / "derived"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    with pytest.raises(OutputExistsError, match="already exists") as raised:
        save_model(stories_model, target, PROVENANCE)
    assert "\n" not in str(raised.value)
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]
    assert hidden_leftovers(tmp_path) == []


def test_existing_file_is_refused_even_with_overwrite(stories_model, tmp_path):
    target = tmp_path / "derived"
    target.write_text("not a folder")
    with pytest.raises(OutputExistsError, match="not a folder"):
        save_model(stories_model, target, PROVENANCE, overwrite=True)
    assert target.read_text() == "not a folder"


def test_overwrite_replaces_on_success(stories_model, tmp_path):
    target = tmp_path / "derived"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    save_model(stories_model, target, PROVENANCE, overwrite=True)
    assert not (target / "keep.txt").exists()
    assert (target / "model.safetensors").is_file()
    assert json.loads((target / "slimkit.json").read_text()) == PROVENANCE
    assert hidden_leftovers(tmp_path) == []


def test_failing_overwrite_keeps_the_old_folder(stories_model, tmp_path, monkeypatch):
    target = tmp_path / "derived"
    target.mkdir()
    (target / "keep.txt").write_text("old")

    def broken(folder, *args, **kwargs):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(stories_model.model, "save_pretrained", broken)
    with pytest.raises(OSError, match="disk full"):
        save_model(stories_model, target, PROVENANCE, overwrite=True)
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]
    assert (target / "keep.txt").read_text() == "old"
    assert hidden_leftovers(tmp_path) == []


def test_failing_final_rename_keeps_the_old_folder(stories_model, tmp_path, monkeypatch):
    target = tmp_path / "derived"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    real_rename = Path.rename

    def rename(self, destination):
        if self.name.startswith(".derived.partial-"):
            raise OSError("rename failed")
        return real_rename(self, destination)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError, match="rename failed"):
        save_model(stories_model, target, PROVENANCE, overwrite=True)
    assert target.is_dir() and (target / "keep.txt").read_text() == "old"
    assert hidden_leftovers(tmp_path) == []


def test_save_creates_missing_parents(stories_model, tmp_path):
    out = save_model(stories_model, tmp_path / "a" / "b" / "derived", PROVENANCE)
    assert (out / "model.safetensors").is_file()


# -- bad inputs ------------------------------------------------------------------------------


@pytest.fixture
def bad_inputs(tmp_path, stories, monkeypatch) -> Path:
    """A working directory holding broken model folders and files."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "config-only").mkdir()
    shutil.copy(stories / "config.json", tmp_path / "config-only" / "config.json")
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "broken-config").mkdir()
    (tmp_path / "broken-config" / "config.json").write_text("{not json")
    (tmp_path / "broken-weights").mkdir()
    shutil.copy(stories / "config.json", tmp_path / "broken-weights" / "config.json")
    (tmp_path / "broken-weights" / "model.safetensors").write_bytes(b"garbage")
    (tmp_path / "bad-provenance").mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(stories / name, tmp_path / "bad-provenance" / name)
    (tmp_path / "bad-provenance" / "slimkit.json").write_text("{oops")
    (tmp_path / "garbage.gguf").write_bytes(b"not a gguf file")
    (tmp_path / "unknown-type").mkdir()
    (tmp_path / "unknown-type" / "config.json").write_text('{"model_type": "no_such_family_xyz"}')
    (tmp_path / "unknown-type" / "model.safetensors").write_bytes(b"")
    return tmp_path




@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("./nope", "no such model folder or file: ./nope"),
        ("/nope/x", "no such model folder or file: /nope/x"),
        ("nope", "no such model folder or file: nope"),
        ("~/surely-not-here-xyz", "no such model folder or file"),
        ("empty", "has no config.json"),
        ("config-only", "has a config.json but no weights"),
        ("notes.txt", "is a file but not a model"),
        ("example:nope", "no bundled example 'nope'; bundled: stories260K"),
        ("missing.gguf", "no such model folder or file: missing.gguf"),
        ("sub/missing.gguf", "no such model folder or file: sub/missing.gguf"),
        ("broken-config", "config.json is not a usable model config"),
        ("broken-config/config.json", "config.json is not a usable model config"),
        ("broken-weights", "could not load the model in broken-weights"),
        ("bad-provenance", "slimkit.json is not valid JSON"),
        ("garbage.gguf", "could not load GGUF file"),
        ("unknown-type", "is not a usable model config"),
    ],
)
def test_bad_inputs(bad_inputs, spec, expected):
    with pytest.raises(ModelLoadError) as raised:
        load_model(spec)
    message = str(raised.value)
    assert expected in message
    assert "\n" not in message, message


def test_unreachable_hub_id(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable once at import; without this a test run that imported it
    # earlier would retry the network for ~25 s.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError) as raised:
        load_model("someorg/somemodel")
    message = str(raised.value)
    assert "'someorg/somemodel'" in message and "hub" in message.lower()
    assert "\n" not in message


def test_load_model_is_exported():
    assert slimkit.load_model is load_model and slimkit.save_model is save_model


# -- a real GGUF model -----------------------------------------------------------------------

GGUF = Path("smollm2-135m-instruct-q4_1") / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smollm2(assets) -> LoadedModel:
    file = assets / GGUF
    if not file.is_file():
        pytest.skip(f"{file} is absent")
    return load_model(file)


@pytest.mark.slow
@pytest.mark.assets
def test_gguf_smollm2(smollm2):
    host = slimkit.make_host(load_entrypoints=False)
    model = smollm2.model
    assert isinstance(model, tf.LlamaForCausalLM)
    assert smollm2.extras == {"gguf_file": GGUF.name}
    assert smollm2.provenance is None
    adapter = host.adapter_for(smollm2)
    assert adapter.name == "llama"
    layout = adapter.layout(model)
    assert len(layout.blocks) == 30
    attention = layout.blocks[0].attention
    assert (attention.num_heads, attention.num_kv_heads, attention.head_dim) == (9, 3, 64)
    assert layout.blocks[0].mlp.intermediate_size == 1536
    assert layout.tied_embeddings
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not hasattr(model.config, "quantization_config")
    assert "quantization_config" not in model.config.to_dict()
    assert smollm2.tokenizer is not None

    tokenizer = smollm2.tokenizer
    inputs = tokenizer("The history of the Roman Empire", return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    text = tokenizer.decode(generated[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert text.startswith(" is often divided into"), text
