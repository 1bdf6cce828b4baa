"""The ``compressed-tensors`` exporter: a Hugging Face folder that transformers (with the
``compressed-tensors`` package) and vLLM load, holding slimkit's integer codes as they are.

See docs/export_compressed_tensors.md for the mapping, the loading paths that work and the
serving notes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from slimkit import EXPORT_CONTENT_ID_KEY, BaseExporter, ExportSummary, MethodConfig, hookimpl
from slimkit.plugins.export.compressed_tensors.checks import problems
from slimkit.plugins.export.compressed_tensors.config import (
    CONFIG_CONTENT_ID_KEY, config_json, quantization_config,
)
from slimkit.plugins.export.compressed_tensors.notes import loading_notes
from slimkit.plugins.export.compressed_tensors.plan import plan_export
from slimkit.plugins.export.compressed_tensors.sparsity import measure
from slimkit.plugins.export.compressed_tensors.tensors import words
from slimkit.plugins.export.compressed_tensors.writer import (
    PROVENANCE_FILE, collect_tensors, head_is_tied, lineage, write_folder,
)

NAME = "compressed-tensors"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CONTENT_ID = re.compile(r"sha256:[0-9a-f]{64}")


class CompressedTensorsConfig(MethodConfig):
    zero_point_layout: Literal["packed", "transformers"] = Field(
        "packed",
        description="Asymmetric grids' zero points. packed: compressed-tensors' layout, which vLLM and SGLang "
        "read (transformers 5.25 then needs CompressedTensorsConfig(dequantize=True)); transformers: the same "
        "words padded to the shape plain from_pretrained expects in transformers 5.25 (vLLM refuses it).",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32",
        description="Dtype of the float tensors (norms, embeddings, head, unquantized layers) and of the "
        "config; float32 keeps them exactly slimkit's. Scales are always float32 copies of slimkit's.",
    )
    dense_3bit: bool = Field(
        False, description="Allow 3-bit grids (read right only by compressed-tensors >= 0.18; not by vLLM's "
        "released kernels).",
    )
    sparsity_config: Literal["quantized", "always", "never"] = Field(
        "quantized",
        description="State pruned layers' sparsity (format dense) in the quantization_config. quantized: 2:4 "
        "weight-only quantized layers; always: every pruned block layer, float models too (loading then needs "
        "compressed-tensors, and vLLM sends 2:4 float/W8A8 layers to its 2:4 kernels, which 2026 releases "
        "removed); never.",
    )


class CompressedTensorsExporter(BaseExporter):
    """Hugging Face folder in compressed-tensors format (transformers, vLLM, SGLang)."""

    name = NAME
    version = 1
    Config = CompressedTensorsConfig
    writes = "folder"
    suffix = ""

    def check(self, model, config, ctx):
        return problems(model.model, plan_export(model.model), dense_3bit=config.dense_3bit)

    def estimated_bytes(self, model, config):
        plan = plan_export(model.model)
        size = DTYPES[config.dtype].itemsize
        total, seen, tables = 0, set(), set()
        for key, value in model.model.state_dict().items():
            ident = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape))
            if plan.owner(key) is None and ident not in seen:  # tied tensors are written once
                seen.add(ident)
                total += value.numel() * (size if value.is_floating_point() else value.element_size())
        for module, scheme in plan.quantized.values():
            rows, groups = module.scales.shape
            total += rows * 4 * (words(module.in_features, scheme.bits) + groups)
            if not scheme.symmetric:
                total += words(rows, scheme.bits) * groups * 4
        for module in plan.dequantized.values():  # one float per code; a tied head shares its table's
            if module.qweight.data_ptr() not in tables:
                tables.add(module.qweight.data_ptr())
                total += _weights(module) * size
        return total

    def export(self, model, out, config, ctx):
        dtype = DTYPES[config.dtype]
        net = model.model
        plan = plan_export(net)
        quantized = bool(plan.quantized)
        declare = config.sparsity_config == "always" or (config.sparsity_config == "quantized" and quantized)
        sparsity = measure(net, plan, every_layer=config.sparsity_config == "always") if declare else None
        section = quantization_config(plan, sparsity) if quantized or sparsity is not None else None
        tensors = collect_tensors(net, plan, dtype, config.zero_point_layout)
        ctx.report("tensors", 1, 2, f"{len(tensors)} tensors")
        tied = head_is_tied(net, plan, tensors)
        if tied:
            del tensors[f"{plan.head}.weight"]
        notes = loading_notes(plan, config.zero_point_layout, sparsity)
        record = {"format": NAME, "exporter_version": self.version, "params": config.model_dump(mode="json"),
                  "quantization_format": plan.format if quantized else None}
        write_folder(out, net, model.tokenizer, tensors,
                     config_json(net, ctx.content_id, dtype, section, tied),
                     lineage(ctx.provenance, ctx.content_id, record, type(net).__name__))
        ctx.report("tensors", 2, 2, "written")
        layers = {scheme.describe(): len(names) for scheme, names in plan.schemes.items()}
        what = ", ".join(f"{count} layers {grid}" for grid, count in layers.items())
        dequantized = f"; {', '.join(sorted(plan.dequantized))} dequantized exactly" if plan.dequantized else ""
        return ExportSummary(
            (f"compressed-tensors {plan.format}: {what} (codes as stored){dequantized}; other tensors "
             f"{config.dtype}") if quantized else f"compressed-tensors folder of a float model ({config.dtype})",
            {"format": plan.format if quantized else "float", "layers": layers,
             "dequantized": sorted(plan.dequantized), "ignore": plan.ignored if quantized else [],
             "tied_head": tied, "dtype": config.dtype,
             "sparsity": None if sparsity is None else {"structure": sparsity.structure,
                                                        "global_sparsity": sparsity.global_sparsity,
                                                        "layers": len(sparsity.layers)},
             "loading": notes},
        )

    @classmethod
    def identify(cls, path):
        try:
            folder = Path(path)
            if not folder.is_dir():
                return None
            document = _read_json(folder / PROVENANCE_FILE)
            export = document.get("export") if isinstance(document, dict) else None
            if isinstance(export, dict) and export.get("format") == NAME:
                found = document.get(EXPORT_CONTENT_ID_KEY)  # type: ignore[union-attr]
                if isinstance(found, str) and CONTENT_ID.fullmatch(found):
                    return found
            config = _read_json(folder / "config.json")
            found = config.get(CONFIG_CONTENT_ID_KEY) if isinstance(config, dict) else None
            return found if isinstance(found, str) and CONTENT_ID.fullmatch(found) else None
        except (OSError, ValueError):
            return None


def _weights(module: Any) -> int:
    if hasattr(module, "num_embeddings"):
        return module.num_embeddings * module.embedding_dim
    return module.out_features * module.in_features


def _read_json(file: Path) -> Any:
    if not file.is_file():
        return None
    return json.loads(file.read_text(encoding="utf-8"))


@hookimpl
def register_exporters(register):
    register(CompressedTensorsExporter)
