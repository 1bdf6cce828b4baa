"""Per-block checkpoints of a streamed step, so that a run killed mid-model resumes where it stopped.

A step's work folder (named after its step key) holds one shard per finished block and
``progress.json``: the step key, the run that wrote it, and for every finished block what the
method noted about it (``BlockStep.record``: the figures its summary is built from) and the shape
of its layers (so the skeleton can take the shape the written block has: quantized layers,
shrunk matrices). After each block of a data-aware method, the hidden states that feed the next
block are saved beside it (``hidden.safetensors``), so a resumed run starts at the first
unfinished block with exactly the inputs it would have had. Every file is written under a
temporary name and renamed, ``progress.json`` last: what it lists is always on disk whole.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.core.architecture import set_module
from slimkit.core.atomic import write_staged

PROGRESS_FILE = "progress.json"
HIDDEN_FILE = "hidden.safetensors"


def _replace(file: Path, write: Any) -> None:
    write_staged(file, "file", write, what="cannot write")


def read_progress(folder: Path, key: str) -> dict[str, Any] | None:
    """The progress of step ``key`` in ``folder``, or ``None`` (none, another step's, unreadable)."""
    try:
        progress = json.loads((folder / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return progress if isinstance(progress, dict) and progress.get("key") == key else None


def write_progress(folder: Path, progress: dict[str, Any]) -> None:
    _replace(folder / PROGRESS_FILE, lambda path: path.write_text(json.dumps(progress, indent=1, sort_keys=True)))


def save_hidden(folder: Path, hidden: torch.Tensor) -> None:
    from safetensors.torch import save_file

    _replace(folder / HIDDEN_FILE, lambda path: save_file({"hidden": hidden.detach().contiguous().cpu()}, str(path)))


def load_hidden(folder: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(str(folder / HIDDEN_FILE))["hidden"]


def structure(block: nn.Module) -> dict[str, Any]:
    """The shape of a block's layers as written: slimkit's replaced layers (their records) and
    every plain linear's ``[in, out, bias]``, by name within the block."""
    from slimkit.core.storage import layer_record, replaced_modules

    replaced = replaced_modules(block)
    linears = {name: [m.in_features, m.out_features, m.bias is not None] for name, m in block.named_modules()
               if isinstance(m, nn.Linear) and not any(name.startswith(r + ".") for r in replaced)}
    return {"replaced": {name: layer_record(m) for name, m in replaced.items()}, "linears": linears}


def restore_structure(block: nn.Module, shape: dict[str, Any], dtype: torch.dtype) -> None:
    """Give the skeleton's ``block`` (on the meta device) the layer shapes :func:`structure` noted."""
    from slimkit.core.storage import _skeleton

    for name, (in_features, out_features, bias) in shape.get("linears", {}).items():
        current = block.get_submodule(name)
        if (current.in_features, current.out_features, current.bias is not None) != (in_features, out_features, bias):
            set_module(block, name, nn.Linear(in_features, out_features, bias=bias, device="meta", dtype=dtype))
    for name, record in shape.get("replaced", {}).items():  # outermost first, as storage writes them
        set_module(block, name, _skeleton(record, dtype).to("meta"))
