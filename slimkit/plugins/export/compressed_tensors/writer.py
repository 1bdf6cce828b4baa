"""Writing the export folder: ``model.safetensors``, ``config.json``, ``slimkit.json``, the tokenizer
and the generation config.

``slimkit.json`` carries the model's lineage (its provenance, when slimkit made it) and its content
id under :data:`slimkit.EXPORT_CONTENT_ID_KEY`, but never the ``modules`` section slimkit's own
folders have: with it, ``slimkit.load_model`` would look for ``slimkit.safetensors`` instead of
loading the folder as the Hugging Face folder it is.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Mapping

import torch

from slimkit import EXPORT_CONTENT_ID_KEY
from slimkit.plugins.export.compressed_tensors.plan import ExportPlan
from slimkit.plugins.export.compressed_tensors.tensors import (
    ZeroPointLayout, dequantized_tensors, quantized_tensors,
)

WEIGHTS_FILE = "model.safetensors"
PROVENANCE_FILE = "slimkit.json"
#: slimkit.json sections that mark a folder as slimkit's own storage (see the module docstring).
STORAGE_SECTIONS = ("modules", "quantization")


def head_is_tied(model: Any, plan: ExportPlan, tensors: Mapping[str, torch.Tensor]) -> bool:
    """Whether the head can stay tied to the token embedding: the config ties them and the head's
    float weight equals the table's exactly (then only the table is written)."""
    if plan.head is None or not getattr(model.config, "tie_word_embeddings", False):
        return False
    embedding = model.get_input_embeddings()
    table = next((name for name, m in model.named_modules() if m is embedding), None)
    head, table_key = f"{plan.head}.weight", f"{table}.weight"
    return head in tensors and table_key in tensors and torch.equal(tensors[head], tensors[table_key])


def collect_tensors(model: Any, plan: ExportPlan, dtype: torch.dtype,
                    layout: ZeroPointLayout) -> dict[str, torch.Tensor]:
    """Every tensor of the folder by key (the head included; the caller drops it when tied)."""
    tensors: dict[str, torch.Tensor] = {}
    done: set[str] = set()
    seen: dict[tuple[int, int], str] = {}
    for key, value in model.state_dict().items():
        owner = plan.owner(key)
        if owner is not None:
            if owner not in done:
                done.add(owner)
                if owner in plan.quantized:
                    tensors.update(quantized_tensors(owner, plan.quantized[owner][0], layout, dtype))
                else:
                    tensors.update(dequantized_tensors(owner, plan.dequantized[owner], dtype))  # type: ignore[arg-type]
            continue
        tensor = value.detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.to(dtype)
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if tensor.numel() and ident in seen:  # safetensors refuses shared storage: a tied copy
            tensor = tensor.clone()
        seen[ident] = key
        tensors[key] = tensor.contiguous()
    return tensors


def lineage(provenance: Mapping[str, Any] | None, content_id: str, export: Mapping[str, Any],
            architecture: str) -> dict[str, Any]:
    """The export's ``slimkit.json``: the model's provenance without slimkit's storage sections,
    its content id, and what the export was."""
    document = {k: v for k, v in (provenance or {}).items() if k not in STORAGE_SECTIONS}
    document.setdefault("architecture", architecture)
    document[EXPORT_CONTENT_ID_KEY] = content_id
    document["export"] = dict(export)
    return document


def write_folder(out: Path, model: Any, tokenizer: Any, tensors: Mapping[str, torch.Tensor],
                 config: Mapping[str, Any], document: Mapping[str, Any]) -> None:
    from safetensors.torch import save_file

    save_file(dict(tensors), str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        with contextlib.suppress(Exception):  # a model without generation defaults is still a model
            generation.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    (out / PROVENANCE_FILE).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
