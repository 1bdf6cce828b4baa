"""The ``gguf`` exporter: slimkit models as GGUF files for llama.cpp (and Ollama, LM Studio...).

slimkit's own integer codes go into GGUF blocks as they are (Q4_0, Q4_1, Q8_0; see
:mod:`.tensors`), float layers as F16/BF16/F32 unless re-quantizing is asked for, the Llama layout
as llama.cpp's converter writes it (``deci`` for per-block shapes; :mod:`.layout`), the tokenizer
from the source GGUF or the Hugging Face tokenizer (:mod:`.vocab`), and the model's content id and
lineage as metadata (``slimkit.content_id``, ``slimkit.provenance``), so ``slimkit show FILE``
finds where the file came from. docs/export_gguf.md has the types table.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from slimkit import EXPORT_CONTENT_ID_KEY, BaseExporter, ExportSummary, MethodConfig, hookimpl
from slimkit.plugins.export.gguf import plan as planning
from slimkit.plugins.export.gguf.tensors import BLOCK, FLOAT_TYPES
from slimkit.plugins.export.gguf.layout import write_hyper
from slimkit.plugins.export.gguf.metadata import read_metadata
from slimkit.plugins.export.gguf.vocab import resolve

PROVENANCE_KEY = "slimkit.provenance"
FILE_TYPES = {"F32": "ALL_F32", "F16": "MOSTLY_F16", "BF16": "MOSTLY_BF16", "Q4_0": "MOSTLY_Q4_0",
              "Q4_1": "MOSTLY_Q4_1", "Q8_0": "MOSTLY_Q8_0"}
TableType = Literal["auto", "Q4_0", "Q4_1", "Q8_0", "F16", "BF16", "F32"]


class GGUFConfig(MethodConfig):
    weights: TableType = Field(
        "auto",
        description="Block projections. auto: slimkit's codes where a GGUF type holds the grid exactly (int4 sym "
        "-> Q4_0, int4 asym -> Q4_1, int8 sym -> Q8_0; groups a multiple of 32, or per channel with rows a "
        "multiple of 32), float layers as float_type. Q4_0/Q4_1/Q8_0: that type for every quantized layer "
        "(written exactly, or refused). F16/BF16/F32: every layer as float (quantized ones dequantized).",
    )
    float_type: Literal["F16", "BF16", "F32"] = Field(
        "F16", description="Type of layers slimkit left in float (F16: llama.cpp's usual type, half of F32's size, "
        "rounding each weight by at most 2^-11 of itself; F32: exactly slimkit's weights).",
    )
    requantize: bool = Field(
        False, description="Quantize float projections with gguf's reference quantizer to the weights type (or, "
        "with weights=auto, the type most quantized layers got); rows not a multiple of 32 stay float.",
    )
    embedding: TableType = Field(
        "auto", description="Token embedding. auto: slimkit's int8 table as Q8_0 (exact), a float one as "
        "float_type; a type: that type (float tables quantized by gguf's reference quantizer).",
    )
    head: TableType = Field(
        "auto", description="Output head. auto: a tied head stays tied (no output.weight), an untied one like "
        "the weights; a type: written as that type (a tied head as its own copy if it differs from the "
        "embedding's type).",
    )
    tokenizer: str = Field(
        "auto", description="auto: copied from the source GGUF when the model (or its base) was loaded from one, "
        "else converted from the Hugging Face tokenizer; hf: always convert; gguf: always copy; or a path "
        "to a .gguf whose tokenizer to copy.",
    )
    architecture: Literal["auto", "llama", "deci"] = Field(
        "auto", description="GGUF architecture: auto writes llama, or deci when blocks differ in MLP width or "
        "head counts (structured pruning); llama.cpp loads per-block shapes only as deci.",
    )
    name: str | None = Field(None, description="general.name in the file (default: from the model's source).")


class GGUFExporter(BaseExporter):
    """GGUF for llama.cpp: slimkit's int4/int8 codes as Q4_0/Q4_1/Q8_0 blocks, lineage in the metadata."""

    name = "gguf"
    version = 1
    Config = GGUFConfig
    writes = "file"
    suffix = ".gguf"

    def check(self, model, config, ctx):
        plan = planning.build(model, ctx.adapter, config)
        problems = list(plan.problems)
        if plan.hyper is not None:
            _, more = resolve(model, config.tokenizer, plan.hyper.vocab)
            problems += more
        return problems

    def export(self, model, out, config, ctx):
        import gguf

        plan = planning.build(model, ctx.adapter, config)
        tokenizer, problems = resolve(model, config.tokenizer, plan.hyper.vocab) if plan.hyper else (None, [])
        if plan.hyper is None or plan.problems or tokenizer is None:  # slimkit calls check() first
            raise RuntimeError("gguf: export() called for a model check() refuses: "
                               + "; ".join(plan.problems + problems))
        writer = gguf.GGUFWriter(None, plan.hyper.arch)
        try:
            self._header(writer, model, config, ctx, plan, tokenizer)
            shapes = [planning.ggml_shape(job) for job in plan.jobs]
            for job, (shape, dtype, raw) in zip(plan.jobs, shapes):
                writer.add_tensor_info(job.name, shape, dtype, int(np.prod(shape)) * dtype.itemsize, raw_dtype=raw)
            writer.write_header_to_file(Path(out))
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for index, (job, (shape, dtype, _)) in enumerate(zip(plan.jobs, shapes), start=1):
                data = job.make()
                if tuple(data.shape) != tuple(shape) or data.dtype != dtype:  # a bug here, never a bad file
                    raise RuntimeError(f"gguf: {job.name} came out {data.dtype}{list(data.shape)}, "
                                       f"planned {dtype}{list(shape)}")
                writer.write_tensor_data(data)
                ctx.report("tensors", index, len(plan.jobs), job.name)
        finally:
            writer.close()
        return _summary(plan, tokenizer.source, config)

    def _header(self, writer, model, config, ctx, plan, tokenizer) -> None:
        import gguf

        # slimkit's keys first: identify() stops reading as soon as it has the content id
        writer.add_string(EXPORT_CONTENT_ID_KEY, ctx.content_id)
        if ctx.provenance:
            writer.add_string(PROVENANCE_KEY, json.dumps(ctx.provenance, separators=(",", ":"), default=str))
        writer.add_type("model")
        writer.add_name(config.name or _model_name(model))
        write_hyper(writer, plan.hyper)
        writer.add_file_type(int(gguf.LlamaFileType[FILE_TYPES[_main_type(plan)]]))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for key, value in tokenizer.fields.items():
            writer.add_key_value(key, value.value, value.type, value.sub_type)

    @classmethod
    def identify(cls, path):
        try:
            path = Path(path)
            if not path.is_file():
                return None
            item = read_metadata(path, lambda key: key == EXPORT_CONTENT_ID_KEY, stop_at=EXPORT_CONTENT_ID_KEY)
            value = item[EXPORT_CONTENT_ID_KEY].value if EXPORT_CONTENT_ID_KEY in item else None
            text = value.decode("utf-8") if isinstance(value, bytes) else None
            return text if text else None
        except Exception:  # a damaged or foreign file is "not ours", never an error
            return None


def _model_name(model: Any) -> str:
    source = str(getattr(model, "source", "") or "")
    return Path(source.removeprefix("example:")).stem or "slimkit model"


def _main_type(plan: planning.Plan) -> str:
    """The type holding most projection weights (general.file_type)."""
    weights: Counter[str] = Counter()
    for job in plan.jobs:
        if job.how != "norm":
            weights[job.type] += int(np.prod(job.shape))
    return weights.most_common(1)[0][0] if weights else "F32"


def _summary(plan: planning.Plan, tokenizer: str, config: Any) -> ExportSummary:
    hyper = plan.hyper
    assert hyper is not None
    counts = plan.counts()
    float_jobs = [job for job in plan.jobs if job.how == "float" and job.name.startswith("blk.")]
    floats = [job.source for job in float_jobs]
    parts = ", ".join(f"{n} {what}" for what, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    float_note = ""
    if float_jobs and config.weights not in FLOAT_TYPES:
        unaligned = sum(1 for job in float_jobs if job.shape[-1] % BLOCK)
        why = [f"{len(float_jobs) - unaligned} left unquantized by slimkit; requantize=true would quantize them"
               ] if len(float_jobs) > unaligned else []
        why += [f"{unaligned} with rows that are not a multiple of {BLOCK}, which no block type holds"
                ] if unaligned else []
        float_note = f"; {len(float_jobs)} block projection(s) went out as float ({'; '.join(why)})"
    tied = not any(job.name == "output.weight" for job in plan.jobs)
    return ExportSummary(
        f"wrote {len(plan.jobs)} tensors as {hyper.arch} ({parts}){float_note}; "
        f"{'tied output head; ' if tied else ''}tokenizer {tokenizer}",
        {"architecture": hyper.arch, "tensors": counts, "float_projections": floats,
         "tokenizer": tokenizer, "tied_head": tied, "file_type": _main_type(plan),
         "types": {job.name: job.type for job in plan.jobs}},
    )


@hookimpl
def register_exporters(register):
    register(GGUFExporter)
