"""Opening a model to be compressed block by block (see :mod:`slimkit.core.stream.blocks`).

:func:`open_streamed` takes what :func:`~slimkit.load_model` takes (a folder, ``example:NAME`` or a
hub id, whose ``*.safetensors`` and ``*.json`` files are fetched into the hub's cache first) and
returns a :class:`~slimkit.core.model_io.LoadedModel` whose ``model`` is a skeleton: the weights
stay in the input's shards until a method's walk reaches them. Everything that can be refused
cheaply is refused here, before any work: a GGUF file or pickle weights (streaming reads
safetensors), a folder whose layers slimkit replaced (quantized or low-rank: stream the float
model instead), tensors that are missing or of the wrong shape, a model no adapter knows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.core.errors import ModelLoadError
from slimkit.core.model_io import EXAMPLE_PREFIX, LoadedModel, examples, load_tokenizer, model_class
from slimkit.core.stream.blocks import BlockStream, block_names
from slimkit.core.stream.checkpoint import Checkpoint
from slimkit.core.stream.skeleton import build_skeleton, retie, stored_entries, tied_groups
from slimkit.core.stream.writer import ShardWriter


def stream_folder(spec: str | os.PathLike[str]) -> Path:
    """The local folder of a model spec, fetching a hub id's safetensors and JSON files first."""
    text = str(spec)
    if text.startswith(EXAMPLE_PREFIX):
        name = text[len(EXAMPLE_PREFIX):]
        found = examples().get(name)
        if found is None:
            raise ModelLoadError(f"no bundled example {name!r}; bundled: {', '.join(examples())}")
        return found
    path = Path(text).expanduser()
    if path.is_file():
        kind = "a GGUF file" if path.suffix == ".gguf" else "a file"
        raise ModelLoadError(f"{path} is {kind}; streaming reads a Hugging Face folder of safetensors shards "
                             "(run without --stream, or save the model as a folder first)")
    if path.is_dir():
        return path
    if text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise ModelLoadError(f"no such model folder: {text}")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text, allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.model"]))
    except Exception as error:
        raise ModelLoadError(f"{text!r} is not a local folder and could not be fetched from the Hugging Face hub "
                             f"(offline, private, or no safetensors weights): {str(error).splitlines()[0]}") from None


def open_streamed(spec: str | os.PathLike[str], host: Any, out: Path | None = None, *, dtype: Any = "float32",
                  device: Any = None, fill: bool = True, replaced: bool = False) -> LoadedModel:
    """``spec`` as a skeleton whose blocks are read from its shards and written to ``out`` (or
    where ``loaded.stream.bind`` says later) as a method walks them (``host`` finds the
    architecture adapter that says where the blocks are). ``fill=False`` leaves the parts outside
    the blocks empty too (to look at the model's shapes, e.g. for a cost estimate). ``replaced``
    admits a folder in which slimkit replaced layers (quantized, low-rank), to be read (evaluated)
    streamed: no streaming method changes such layers."""
    from transformers import AutoConfig

    from slimkit.core.model_io import _read_provenance
    from slimkit.core.runtime import checkpoint_dtype, resolve
    from slimkit.core.storage import section_of

    folder = stream_folder(spec)
    provenance = _read_provenance(folder)
    section = section_of(provenance) if provenance is not None else None
    if section is not None and not replaced:
        raise ModelLoadError(f"{folder} holds layers slimkit replaced (quantized or low-rank), which cannot be "
                             "streamed; stream the float model it came from, with quantization as the last step")
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder} is not a model folder: it has no config.json")
    wanted = resolve(dtype, device, checkpoint=checkpoint_dtype(folder) if dtype == "auto" else None)
    files = None if section is None else list(section.get("files") or [section.get("file", "slimkit.safetensors")])
    source = Checkpoint.open(folder, files=files)
    try:
        config = AutoConfig.from_pretrained(folder)
    except Exception as error:
        raise ModelLoadError(f"{folder}/config.json is not a usable model config: {str(error).splitlines()[0]}") \
            from None
    if hasattr(config, "quantization_config") and section is not None:
        del config.quantization_config
    skeleton = build_skeleton(model_class(config), config, wanted.dtype)
    aliases = tied_groups(skeleton)
    if section is not None:  # slimkit's own layers in place of the float ones, on the meta device
        from slimkit.core.architecture import set_module
        from slimkit.core.storage import _skeleton

        for name, record in section.get("layers", {}).items():
            set_module(skeleton, name, _skeleton(record, wanted.dtype).to("meta"))
        aliases = {**tied_groups(skeleton), **section.get("aliases", {})}
        retie(skeleton, aliases)
    for name, attribute, owner, tensor in list(stored_entries(skeleton)):
        if not tensor.is_meta and name in source:  # a persistent buffer the checkpoint holds: read it
            owner._buffers[attribute] = torch.empty(tensor.shape, dtype=tensor.dtype, device="meta")
    loaded = LoadedModel(skeleton, load_tokenizer(folder), str(spec), folder, provenance)
    layout = host.adapter_for(loaded).layout(skeleton)
    tied_head = layout.lm_head is not None and any(a.startswith(f"{layout.lm_head}.") for a in aliases)
    head = layout.lm_head if layout.lm_head and not tied_head else None
    stream = BlockStream(skeleton, source, ShardWriter(out) if out is not None else None, block_names(layout.blocks),
                         wanted.dtype, wanted.device, head=head, embedding=_embedding(skeleton, aliases),
                         aliases=aliases)
    stream.check()
    if fill:
        stream.load_outer()
    loaded.stream = stream
    if wanted.reason:
        loaded.extras["dtype_reason"] = wanted.reason
    return loaded


def _embedding(skeleton: nn.Module, aliases: dict[str, str]) -> str | None:
    """The name of the token embedding to fill only when used, or ``None`` (filled at open) when it
    cannot be told apart or one of its tensors is the alias of another's (the other side of a tie
    is what gets filled)."""
    getter: Any = getattr(skeleton, "get_input_embeddings", None)  # transformers' PreTrainedModel
    try:
        table = getter() if callable(getter) else None
    except NotImplementedError:
        return None
    name = next((n for n, m in skeleton.named_modules() if m is table and n), None)
    if name is None or any(alias.startswith(f"{name}.") for alias in aliases):
        return None
    return name
