"""Tiny third-party exporters for the export tests, written as a plugin author would (importing
only from ``slimkit``): ``toy.st`` writes one safetensors file carrying the content id in its
metadata, ``toy.dir`` a folder of weights plus a JSON sidecar holding the id, and ``toy.anon`` a
file that carries no id (so only its sha256 in the catalogue can tell what it is).

``fail=`` makes an exporter misbehave the ways the tests need: a check that raises, an interrupt
after a partial write,
a plain exception from the plugin's code, an ``OSError``; ``size_hint=`` is what it says it will
need. The module is the plugin (register it, or install its source as a distribution with an
entry point for the subprocess tests).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional

import torch
from pydantic import Field
from safetensors import safe_open
from safetensors.torch import save_file

from slimkit import EXPORT_CONTENT_ID_KEY, BaseExporter, ExportSummary, MethodConfig, hookimpl

__version__ = "0.3.1"


class ToyConfig(MethodConfig):
    dtype: Literal["float32", "float16"] = Field("float32", description="Precision the weights are written in.")
    refuse: Optional[str] = Field(None, description="Refuse every tensor whose name contains this.")
    fail: Literal["none", "check", "interrupt", "error", "oserror"] = Field("none", description="Misbehave (tests).")
    size_hint: Optional[int] = Field(None, description="What estimated_bytes answers (default: from the weights).")


def _tensors(model, config, ctx):
    state = model.model.state_dict()
    tensors = {}
    for index, (key, value) in enumerate(sorted(state.items()), start=1):
        tensors[key] = value.detach().to(getattr(torch, config.dtype)).contiguous().clone()
        ctx.report("tensors", index, len(state))
    return tensors


def _misbehave(config, out: Path) -> None:
    if config.fail == "none":
        return
    (out / "half.bin" if out.is_dir() else out).write_bytes(b"half of an export")  # then fail half-way
    if config.fail == "interrupt":
        raise KeyboardInterrupt
    if config.fail == "error":
        raise ValueError("the toy exporter broke")
    if config.fail == "oserror":
        raise OSError(28, "No space left on device")


class _Toy(BaseExporter):
    Config = ToyConfig

    def check(self, model, config, ctx):
        if config.fail == "check":
            raise RuntimeError("check exploded")
        if config.refuse is None:
            return []
        return [f"tensor {key}: the toy format cannot hold it; drop refuse= or choose another format"
                for key in sorted(model.model.state_dict()) if config.refuse in key]

    def estimated_bytes(self, model, config):
        if config.size_hint is not None:
            return config.size_hint
        return sum(t.numel() * (2 if config.dtype == "float16" else 4) for t in model.model.state_dict().values())


class ToyFile(_Toy):
    """Weights as one safetensors file carrying the content id in its metadata."""

    name = "toy.st"
    version = 2
    writes = "file"
    suffix = ".st"

    def export(self, model, out, config, ctx):
        _misbehave(config, out)
        tensors = _tensors(model, config, ctx)
        save_file(tensors, str(out), metadata={EXPORT_CONTENT_ID_KEY: ctx.content_id})
        return ExportSummary(f"{len(tensors)} tensors as {config.dtype}", {"tensors": len(tensors)})

    @classmethod
    def identify(cls, path):
        try:
            with safe_open(str(path), "pt") as handle:
                return (handle.metadata() or {}).get(EXPORT_CONTENT_ID_KEY)
        except Exception:  # not a safetensors file: not ours
            return None


class ToyFolder(_Toy):
    """Weights as a folder: model.safetensors and slimkit.json holding the content id."""

    name = "toy.dir"
    writes = "folder"

    def export(self, model, out, config, ctx):
        _misbehave(config, out)
        tensors = _tensors(model, config, ctx)
        save_file(tensors, str(out / "model.safetensors"))
        (out / "slimkit.json").write_text(json.dumps({EXPORT_CONTENT_ID_KEY: ctx.content_id}))
        return ExportSummary(f"{len(tensors)} tensors in a folder", {"tensors": len(tensors)})

    @classmethod
    def identify(cls, path):
        try:
            return json.loads((Path(path) / "slimkit.json").read_text()).get(EXPORT_CONTENT_ID_KEY)
        except (OSError, ValueError, AttributeError):
            return None


class ToyAnonymous(_Toy):
    """Weights as a safetensors file with no content id in it."""

    name = "toy.anon"
    writes = "file"
    suffix = ".anon"

    def export(self, model, out, config, ctx):
        _misbehave(config, out)
        tensors = _tensors(model, config, ctx)
        save_file(tensors, str(out))
        return ExportSummary(f"{len(tensors)} tensors, anonymous")


@hookimpl
def register_exporters(register):
    for cls in (ToyFile, ToyFolder, ToyAnonymous):
        register(cls)
