"""What goes where: one plan of every GGUF tensor (name, type, how it is made) or every reason
there can be none. ``check`` and ``export`` share it, so a model ``check`` passes is one ``export``
can write, and nothing is written until the whole plan holds.

How each part is written (``Job.how``):

* ``codes``: a slimkit-quantized layer whose grid a GGUF block type holds (see :mod:`.tensors`),
  its codes and float16 scales copied into the blocks;
* ``float``: a float layer as ``float_type`` (F16 by default);
* ``requantized``: a float layer (or a table the user asked for in another type) quantized by
  ``gguf.quants`` -- only with ``requantize=true`` for block projections, or an explicit
  ``embedding``/``head`` type;
* ``dequantized``: a quantized layer written as a float type the user asked for;
* ``norm``: norm weights, always F32 (llama.cpp's norms take float32 vectors).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from slimkit.plugins.export.gguf.layout import (
    NORM_TENSORS, ROLE_TENSORS, Hyper, read_hyper, rope_permutation, tensor_name,
)
from slimkit.plugins.export.gguf.tensors import (
    BLOCK, BLOCK_TYPES, FLOAT_TYPES, Codes, auto_type, block_problem, float_array, ggml_type, pack_blocks,
    tensor_bytes,
)


@dataclass
class Job:
    """One tensor to write: its GGUF name, logical shape ``[rows, cols]`` (or ``[n]``), type, how
    it is made, the module it comes from and a function that makes its data."""

    name: str
    shape: tuple[int, ...]
    type: str
    how: str
    source: str
    make: Callable[[], np.ndarray] = field(repr=False)


@dataclass
class Plan:
    hyper: Hyper | None
    jobs: list[Job]
    problems: list[str]

    def counts(self) -> dict[str, int]:
        """``"type how"`` -> number of tensors (e.g. ``"Q4_0 codes": 35``)."""
        return dict(Counter(f"{job.type} {job.how}" for job in self.jobs))


def _is_quantized(module: Any) -> bool:
    return getattr(module, "grid", None) is not None and hasattr(module, "qweight")


def _rows(permutation: torch.Tensor | None, tensor: torch.Tensor) -> torch.Tensor:
    return tensor if permutation is None else tensor[permutation]


def _code_job(name: str, source: str, codes: Codes, target: str, how: str = "codes") -> Job:
    return Job(name, codes.shape, target, how, source, lambda: pack_blocks(codes, target))


def _float_job(name: str, source: str, weight: Callable[[], torch.Tensor], shape: tuple[int, ...],
               target: str, how: str) -> Job:
    return Job(name, shape, target, how, source, lambda: float_array(weight(), target))


def _requant_target(config: Any, layout: Any) -> tuple[str | None, list[str]]:
    """The block type float projections are re-quantized to, when ``requantize`` is on."""
    if not config.requantize:
        return None, []
    if config.weights in BLOCK_TYPES:
        return config.weights, []
    if config.weights in FLOAT_TYPES:
        return None, [f"requantize=true needs a block type to quantize to, and weights={config.weights} is a "
                      "float type: set weights to Q4_0, Q4_1 or Q8_0"]
    found = Counter(auto_type(Codes.of(ref.module)) for _, ref in layout.linears() if _is_quantized(ref.module))
    found.pop(None, None)
    if not found:
        return None, ["requantize=true with weights=auto takes its type from slimkit's quantized layers and the "
                      "model has none: set weights to Q4_0, Q4_1 or Q8_0"]
    return found.most_common(1)[0][0], []


def _no_auto_type(name: str, codes: Codes) -> str:
    if codes.bits in (2, 3):
        fit = "Q4_0" if codes.symmetric else "Q4_1"
        return (f"{name} is {codes.describe()}: no GGUF type stores {codes.bits}-bit codes with float16 group scales "
                f"(the K-quants use 6-bit sub-block scales); weights={fit} writes these codes exactly in 4-bit "
                f"blocks (weights=Q8_0 in 8-bit ones), or quantize it to 4 bits")
    return (f"{name} is {codes.describe()}: Q8_0 has no zero point; quantize it symmetric int8 (Q8_0), or write "
            f"its dequantized weights exactly with weights=F32")


def _projection(ref: Any, name: str, permutation: torch.Tensor | None, config: Any,
                requant: str | None) -> tuple[Job | None, str | None]:
    """The job of one block projection, or the reason it cannot be written."""
    module = ref.module
    if ref.factorised:
        return None, (f"{ref.name} is a low-rank product (LowRankLinear) and GGUF holds one matrix per layer: "
                      "densify first (lowrank.densify), then export")
    shape = (ref.out_features, ref.in_features)
    if _is_quantized(module):
        codes = Codes.of(module, permutation)
        if config.weights in FLOAT_TYPES:
            return _float_job(name, ref.name, codes.dequantized, shape, config.weights, "dequantized"), None
        target = config.weights if config.weights in BLOCK_TYPES else auto_type(codes)
        if target is None:
            return None, _no_auto_type(ref.name, codes)
        problem = block_problem(codes, target)
        if problem is not None:
            return None, f"{ref.name} ({codes.describe()}) cannot be written as {target}: {problem}"
        return _code_job(name, ref.name, codes, target), None

    def weight() -> torch.Tensor:
        return _rows(permutation, ref.weight_out_in().detach())

    if requant is not None and ref.in_features % BLOCK == 0:
        return _float_job(name, ref.name, weight, shape, requant, "requantized"), None
    return _float_job(name, ref.name, weight, shape, config.float_type, "float"), None


def _table_job(name: str, source: str, module: Any, choice: str, float_type: str) -> tuple[Job | None, str | None]:
    """The token embedding (or an output head written from it) as ``choice`` (``auto`` or a type)."""
    if _is_quantized(module):
        codes = Codes.of(module)
        rows, cols = codes.shape
        if choice == "auto":  # slimkit's codes where a block holds them, else its exact float32 values
            target = auto_type(codes)
            if target is not None and block_problem(codes, target) is None:
                return _code_job(name, source, codes, target), None
            return _float_job(name, source, codes.dequantized, (rows, cols), "F32", "dequantized"), None
        if choice in BLOCK_TYPES and block_problem(codes, choice) is None:
            return _code_job(name, source, codes, choice), None
        how = "dequantized" if choice in FLOAT_TYPES else "requantized"
        return _check_rows(_float_job(name, source, codes.dequantized, (rows, cols), choice, how))
    weight = module.weight if isinstance(module.weight, torch.Tensor) else None
    if weight is None:
        return None, f"{source}: no weight to write ({type(module).__name__})"
    target = float_type if choice == "auto" else choice
    how = "float" if target in FLOAT_TYPES else "requantized"
    return _check_rows(_float_job(name, source, lambda: module.weight.detach(), tuple(weight.shape), target, how))


def _check_rows(job: Job) -> tuple[Job | None, str | None]:
    if job.type in BLOCK_TYPES and job.shape[-1] % BLOCK:
        return None, (f"{job.source} as {job.type}: its rows of {job.shape[-1]} are not a multiple of GGUF's "
                      f"{BLOCK}-weight blocks; choose F16, BF16 or F32")
    return job, None


def _same_storage(head: Any, table: Any) -> bool:
    """Whether the output head reads the embedding's very weights (tied)."""
    a = getattr(head, "qweight", None) if _is_quantized(head) else getattr(head, "weight", None)
    b = getattr(table, "qweight", None) if _is_quantized(table) else getattr(table, "weight", None)
    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.data_ptr() == b.data_ptr()


def _norm_job(name: str, source: str, module: Any) -> Job:
    weight = module.weight
    return Job(name, tuple(weight.shape), "F32", "norm", source,
               lambda: weight.detach().to(torch.float32).contiguous().numpy())


def build(model: Any, adapter: Any, config: Any) -> Plan:
    """The plan for ``model`` (a LoadedModel) under ``config`` (a :class:`GGUFConfig`)."""
    if adapter is None:
        return Plan(None, [], [f"architecture: no architecture adapter understands {model.architecture}; "
                               "the gguf exporter writes Llama-family decoders (llama, mistral)"])
    try:
        layout = adapter.layout(model.model)
    except Exception as error:  # the adapter's own refusal (an ArchitectureError), as one line
        return Plan(None, [], [f"architecture: {str(error).splitlines()[0] if str(error) else type(error).__name__}"])
    hyper, problems = read_hyper(model, layout, config.architecture)
    if hyper is None:
        return Plan(None, [], problems)
    requant, more = _requant_target(config, layout)
    problems += more
    root, jobs = model.model, []

    def add(job: Job | None, problem: str | None) -> None:
        if job is not None:
            jobs.append(job)
        if problem is not None:
            problems.append(problem)

    table = root.get_submodule(layout.embeddings[0]) if layout.embeddings else None
    if table is None:
        return Plan(hyper, [], problems + ["architecture: the model has no token embedding"])
    add(*_table_job(tensor_name("TOKEN_EMBD"), layout.embeddings[0], table, config.embedding, config.float_type))
    for block in layout.blocks:
        i = block.index
        for norm, kind in zip(block.norms, NORM_TENSORS):
            jobs.append(_norm_job(tensor_name(kind, i), norm, root.get_submodule(norm)))
        attention = block.attention
        for ref in block.linears():
            heads = {"q": attention.num_heads, "k": attention.num_kv_heads}.get(ref.role)
            permutation = rope_permutation(ref.out_features, heads) if heads else None
            add(*_projection(ref, tensor_name(ROLE_TENSORS[ref.role], i), permutation, config, requant))
    if layout.final_norm is not None:
        jobs.append(_norm_job(tensor_name("OUTPUT_NORM"), layout.final_norm, root.get_submodule(layout.final_norm)))
    head = root.get_submodule(layout.lm_head) if layout.lm_head else None
    if head is not None:
        embedding = next((job for job in jobs if job.name == tensor_name("TOKEN_EMBD")), None)
        add(*_head_job(head, table, layout, config, embedding))
    return Plan(hyper, jobs, problems)


def _head_job(head: Any, table: Any, layout: Any, config: Any, embedding: Job | None) -> tuple[Job | None, str | None]:
    """``output.weight``, or nothing when the head is tied and asked to stay so."""
    name = tensor_name("OUTPUT")
    if getattr(head, "rank", None) is not None and hasattr(head, "down"):
        return None, (f"{layout.lm_head} is a low-rank product (LowRankLinear): densify first (lowrank.densify)")
    if _same_storage(head, table):
        if config.head == "auto" or (embedding is not None and config.head == embedding.type):
            return None, None  # tied: llama.cpp reads token_embd.weight for the output too
        return _table_job(name, layout.lm_head, table, config.head, config.float_type)
    return _table_job(name, layout.lm_head, head, config.head, config.float_type)


def ggml_shape(job: Job) -> tuple[tuple[int, ...], Any, Any]:
    """``(shape, numpy dtype, raw GGML type or None)`` as ``GGUFWriter.add_tensor_info`` wants them:
    float32/float16 arrays by their logical shape, everything else as bytes."""
    if job.type == "F32":
        return job.shape, np.dtype(np.float32), None
    if job.type == "F16":
        return job.shape, np.dtype(np.float16), None
    row_bytes = tensor_bytes(job.shape[-1:], job.type)
    return (*job.shape[:-1], row_bytes), np.dtype(np.uint8), ggml_type(job.type)
