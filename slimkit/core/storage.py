"""Saving and reloading models in which slimkit replaced layers by its own modules: quantized
linears and embeddings (integer buffers, :mod:`slimkit.core.quant.modules`) and low-rank
factorised linears (:class:`slimkit.core.lowrank.LowRankLinear`).

Such a model is saved as a Hugging Face folder whose ``slimkit.safetensors`` holds the state
dict (the replaced layers' own tensors in place of their float weights) and whose
``slimkit.json`` gains a ``modules`` section: every replaced layer's kind and shape, tied
tables, and the SHA-256 of every stored tensor, so a truncated or edited file is detected on load
rather than silently producing a different model. The file is deliberately not called
``model.safetensors``: plain ``transformers`` (which skips quantization configs it does not know
and would fill the missing float weights with random values) refuses a folder without one.
:func:`to_dense` (the ``densify`` and ``dequantize`` steps) gives a float copy that plain
``transformers`` loads. Folders written by slimkit before low-rank layers existed (a
``quantization`` section, ``quantized.safetensors``) load unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.core.architecture import set_module
from slimkit.core.errors import ModelLoadError
from slimkit.core.lowrank import LowRankLinear
from slimkit.core.quant.formats import QuantGrid
from slimkit.core.quant.modules import QuantizedEmbedding, QuantizedLinear
from slimkit.core.stream.skeleton import parameters_on_meta

FORMAT = 2
SHARDED_FORMAT = 3  # "files" (several shards, written block by block when streaming) instead of "file"
FORMATS = (1, 2, 3)  # 1: quantized layers only, in a "quantization" section
SECTION = "modules"
LEGACY_SECTION = "quantization"
WEIGHTS_FILE = "slimkit.safetensors"  # not model.safetensors: plain transformers must not load it
REPLACED = (QuantizedLinear, QuantizedEmbedding, LowRankLinear)


def replaced_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every layer slimkit replaced, by name, outermost first (a quantized factor of a low-rank
    layer comes after the layer)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, REPLACED)}


def quantized_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every quantized layer (``QuantizedLinear``, ``QuantizedEmbedding``), by name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, (QuantizedLinear, QuantizedEmbedding))}


def has_replaced_modules(model: nn.Module) -> bool:
    return any(isinstance(m, REPLACED) for m in model.modules())


def section_of(provenance: dict[str, Any]) -> dict[str, Any] | None:
    """The ``modules`` section of a ``slimkit.json`` (or a format-1 ``quantization`` one)."""
    found = provenance.get(SECTION, provenance.get(LEGACY_SECTION))
    return found if isinstance(found, dict) else None


def _digest(tensor: torch.Tensor) -> str:
    data = tensor.detach().contiguous().cpu()
    raw = data.reshape(-1).view(torch.uint8).numpy()
    return hashlib.sha256(memoryview(raw) if data.numel() else b"").hexdigest()  # type: ignore[arg-type]


def _unique_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state dict with every tensor stored once: ``(tensors, aliases)`` where ``aliases``
    maps a key whose tensor is another key's (tied tables) to that key."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
    for key, tensor in model.state_dict().items():
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if tensor.numel() and ident in seen:
            aliases[key] = seen[ident]
        else:
            seen[ident] = key
            tensors[key] = tensor.detach().contiguous()
    return tensors, aliases


def layer_record(module: nn.Module) -> dict[str, Any]:
    if isinstance(module, LowRankLinear):
        return {"kind": "lowrank", "in_features": module.in_features, "out_features": module.out_features,
                "rank": module.rank, "bias": module.up.bias is not None}
    if isinstance(module, QuantizedEmbedding):
        return {"kind": "embedding", "num_embeddings": module.num_embeddings, "embedding_dim": module.embedding_dim,
                "padding_idx": module.padding_idx, "bits": 8, "group_size": None, "symmetric": True}
    assert isinstance(module, QuantizedLinear)
    return {"kind": "linear", "in_features": module.in_features, "out_features": module.out_features,
            "bias": module.bias is not None, "bits": module.grid.bits, "group_size": module.grid.group_size,
            "symmetric": module.grid.symmetric, "activations": module.activations}


def save_replaced(model: nn.Module, folder: Path) -> dict[str, Any]:
    """Write ``config.json`` and ``slimkit.safetensors`` of a model with replaced layers into
    ``folder``; returns the ``modules`` section for ``slimkit.json``."""
    from safetensors.torch import save_file

    tensors, aliases = _unique_state(model)
    layers = {name: layer_record(m) for name, m in replaced_modules(model).items()}
    section = {
        "format": FORMAT,
        "file": WEIGHTS_FILE,
        "layers": layers,
        "aliases": aliases,
        "sha256": {key: _digest(t) for key, t in tensors.items()},
        "bytes": sum(t.numel() * t.element_size() for t in tensors.values()),
    }
    config: Any = model.config
    config.save_pretrained(folder)
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        with contextlib.suppress(Exception):
            generation.save_pretrained(folder)
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt", "slimkit_modules": str(FORMAT)})
    return section


def _skeleton(record: dict[str, Any], dtype: torch.dtype) -> nn.Module:
    if record["kind"] == "lowrank":
        return LowRankLinear(record["in_features"], record["out_features"], record["rank"], bias=record["bias"],
                             dtype=dtype)
    if record["kind"] == "embedding":
        return QuantizedEmbedding(record["num_embeddings"], record["embedding_dim"], record.get("padding_idx"))
    grid = QuantGrid(record["bits"], record["group_size"], record["symmetric"])
    return QuantizedLinear(record["in_features"], record["out_features"], grid, bias=record["bias"],
                           activations=record.get("activations"))


def load_replaced(folder: Path, section: dict[str, Any], model_class: Any, config: Any,
                  dtype: torch.dtype) -> nn.Module:
    """Rebuild a model saved by :func:`save_replaced`, checking every tensor's SHA-256."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if section.get("format") not in FORMATS:
        raise ModelLoadError(f"{folder}: slimkit module format {section.get('format')!r} is not one this slimkit "
                             f"reads ({', '.join(map(str, FORMATS))}); upgrade slimkit")
    files = [folder / name for name in section.get("files", [section.get("file", WEIGHTS_FILE)])]
    file = files[0] if len(files) == 1 else folder
    stored: dict[str, torch.Tensor] = {}
    for part in files:
        try:
            stored.update(load_file(str(part)))
        except (SafetensorError, OSError, ValueError) as error:
            raise ModelLoadError(f"{part} cannot be read (truncated or corrupt?): {error}") from None
    expected = section.get("sha256", {})
    missing = sorted(set(expected) - set(stored))
    if missing:
        raise ModelLoadError(f"{file} lacks {len(missing)} tensor(s) its slimkit.json lists, e.g. {missing[0]}")
    for key, digest in expected.items():
        if _digest(stored[key]) != digest:
            raise ModelLoadError(f"{file}: tensor {key} does not match its recorded SHA-256: the file was "
                                 "modified or damaged after slimkit saved it")
    for key, target in section.get("aliases", {}).items():
        stored[key] = stored[target]
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    build = getattr(model_class, "from_config", None) or model_class._from_config
    with parameters_on_meta():
        model = build(config, dtype=dtype)
    layers = section.get("layers", {})
    for name, record in layers.items():  # outermost first: a low-rank layer before its quantized factors
        kind = record.get("kind")
        if kind not in ("linear", "embedding", "lowrank"):
            raise ModelLoadError(f"{folder}: layer {name} is of kind {kind!r}, which this slimkit does not know; "
                                 "upgrade slimkit")
        set_module(model, name, _skeleton(record, dtype))
    for module in model.modules():  # what was not replaced (norms, float layers) gets real storage
        for pname, param in list(module._parameters.items()):
            if param is not None and param.is_meta:
                module._parameters[pname] = nn.Parameter(torch.empty(param.shape, dtype=param.dtype),
                                                         requires_grad=param.requires_grad)
    result = model.load_state_dict(stored, strict=False)
    if result.missing_keys or result.unexpected_keys:
        what = result.missing_keys[:1] or result.unexpected_keys[:1]
        raise ModelLoadError(f"{file} does not fit the model in {folder}/config.json "
                             f"({len(result.missing_keys)} missing, {len(result.unexpected_keys)} unexpected, e.g. "
                             f"{what[0]})")
    for key, target in section.get("aliases", {}).items():  # tie again: one tensor, not two copies
        owner, _, buffer = key.rpartition(".")
        source_owner, _, source_buffer = target.rpartition(".")
        setattr(model.get_submodule(owner), buffer, getattr(model.get_submodule(source_owner), source_buffer))
    model.eval()
    return model


def to_dense(model: nn.Module) -> nn.Module:
    """Replace every replaced layer by the float module it stands for (in place): quantized
    layers by their dequantized weights, low-rank layers by the product of their factors. The
    result saves and loads with plain ``transformers``. A head that shared its table with a
    quantized embedding shares the float table again."""
    tables: dict[int, nn.Embedding] = {}
    heads: list[tuple[str, QuantizedLinear]] = []
    for name, module in quantized_modules(model).items():
        if isinstance(module, QuantizedEmbedding):
            dense = nn.Embedding(module.num_embeddings, module.embedding_dim, module.padding_idx)
            with torch.no_grad():
                dense.weight.copy_(module.weight)
            tables[id(module.qweight)] = dense
            set_module(model, name, dense)
        elif isinstance(module, QuantizedLinear):
            heads.append((name, module))
    for name, module in heads:
        linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
        table = tables.get(id(module.qweight))
        with torch.no_grad():
            if table is not None:
                linear.weight = table.weight
            else:
                linear.weight.copy_(module.dequantized_weight())
            if module.bias is not None:
                linear.bias.copy_(module.bias)
        set_module(model, name, linear)
    for name, module in replaced_modules(model).items():  # after their factors were dequantized
        if isinstance(module, LowRankLinear):
            set_module(model, name, module.to_linear())
    return model
