"""The ``config.json`` of an export: the model's own config plus the ``quantization_config`` that
transformers (``CompressedTensorsHfQuantizer``) and vLLM (``CompressedTensorsConfig``) read.

One config group per distinct grid. With one group it targets ``Linear`` and the ``ignore`` list
names every linear layer written as float (the output head, layers no quantizer touched), as
llm-compressor writes it; with several, each group targets its layers by name. Status
``compressed``: the folder holds packed codes, not float weights to quantize.
"""

from __future__ import annotations

from typing import Any

import torch

from slimkit.plugins.export.compressed_tensors.plan import ExportPlan, Scheme
from slimkit.plugins.export.compressed_tensors.sparsity import Sparsity

#: The compressed-tensors release the layout was checked against (3-bit packing is dense since 0.18).
LAYOUT_VERSION = "0.20.1"
#: ``config.json`` key holding the model's content id (transformers keeps unknown keys as attributes).
CONFIG_CONTENT_ID_KEY = "slimkit_content_id"


def weight_args(scheme: Scheme) -> dict[str, Any]:
    return {
        "num_bits": scheme.bits,
        "type": "int",
        "symmetric": scheme.symmetric,
        "strategy": "channel" if scheme.group_size is None else "group",
        "group_size": scheme.group_size,
        "dynamic": False,
    }


#: SmoothQuant's activations: int8, symmetric, one scale per token computed at run time.
INPUT_INT8_PER_TOKEN = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token",
                        "group_size": None, "dynamic": True}


def config_groups(plan: ExportPlan) -> dict[str, dict[str, Any]]:
    schemes = plan.schemes
    groups = {}
    for index, (scheme, names) in enumerate(sorted(schemes.items(), key=lambda item: item[1][0])):
        groups[f"group_{index}"] = {
            "targets": ["Linear"] if len(schemes) == 1 else sorted(names),
            "weights": weight_args(scheme),
            "input_activations": dict(INPUT_INT8_PER_TOKEN) if scheme.activations == "int8" else None,
            "output_activations": None,
            "format": scheme.format,
        }
    return groups


def quantization_config(plan: ExportPlan, sparsity: Sparsity | None) -> dict[str, Any]:
    """The ``quantization_config`` section (with the ``sparsity_config`` when given)."""
    all_linears = sorted(set(plan.float_linears) | set(plan.quantized) | set(plan.ignored))
    return {
        "quant_method": "compressed-tensors",
        "format": plan.format,
        "quantization_status": "compressed",
        "config_groups": config_groups(plan),
        "ignore": plan.ignored if plan.quantized else [],
        "kv_cache_scheme": None,
        "global_compression_ratio": None,
        "sparsity_config": sparsity.config(all_linears) if sparsity is not None else {},
        "transform_config": {},
        "version": LAYOUT_VERSION,
    }


def config_json(model: Any, content_id: str, dtype: torch.dtype,
                quantization: dict[str, Any] | None, tie_head: bool) -> dict[str, Any]:
    """The model's config as ``save_pretrained`` writes it, with the export's keys."""
    data = model.config.to_diff_dict()
    data.pop("quantization_config", None)
    data.setdefault("architectures", [type(model).__name__])
    if not data.get("architectures"):
        data["architectures"] = [type(model).__name__]
    data["dtype"] = str(dtype).removeprefix("torch.")
    data.pop("torch_dtype", None)
    if hasattr(model.config, "tie_word_embeddings"):
        data["tie_word_embeddings"] = tie_head
    if quantization is not None:
        data["quantization_config"] = quantization
    data[CONFIG_CONTENT_ID_KEY] = content_id
    return data
