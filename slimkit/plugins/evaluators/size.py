"""Size: parameters, non-zero parameters, sparsity, bytes in memory and bytes on disk."""

from __future__ import annotations

import torch
from pydantic import Field

from slimkit import BaseEvaluator, MethodConfig, disk_bytes, hookimpl


class SizeConfig(MethodConfig):
    include_embeddings: bool = Field(
        True, description="Count embedding and LM-head parameters in params and sparsity."
    )


def unique_parameters(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Named parameters with tied ones counted once (``named_parameters`` already dedupes)."""
    return list(module.named_parameters())


class SizeEvaluator(BaseEvaluator):
    """Parameter count, non-zero parameters, sparsity, in-memory and on-disk bytes."""

    name = "size"
    metrics = ("params", "nonzero_params", "sparsity", "memory_bytes", "disk_bytes")
    version = 1
    Config = SizeConfig

    def evaluate(self, model, config, ctx):
        from slimkit import QuantizedEmbedding, QuantizedLinear

        embedding_ids = set()
        if not config.include_embeddings:
            for module in (model.model.get_input_embeddings(), model.model.get_output_embeddings()):
                if isinstance(module, (QuantizedLinear, QuantizedEmbedding)):
                    embedding_ids.add(id(module.qweight))
                elif module is not None:
                    embedding_ids.add(id(module.weight))
        params = nonzero = memory = 0
        with torch.no_grad():
            for _, tensor in unique_parameters(model.model):
                memory += tensor.numel() * tensor.element_size()
                if id(tensor) in embedding_ids:
                    continue
                params += tensor.numel()
                nonzero += int(torch.count_nonzero(tensor))
            # quantized layers hold their weights as integer buffers: count the weights they stand
            # for (a tied table once), non-zero where the code is not the zero point
            seen = set()
            for module in model.model.modules():
                if not isinstance(module, (QuantizedLinear, QuantizedEmbedding)) or id(module.qweight) in seen:
                    continue
                seen.add(id(module.qweight))
                if id(module.qweight) in embedding_ids:
                    continue
                weight = module.weight if isinstance(module, QuantizedEmbedding) else module.dequantized_weight()
                params += weight.numel()
                nonzero += int(torch.count_nonzero(weight))
        for buffer in model.model.buffers():
            memory += buffer.numel() * buffer.element_size()
        metrics = {
            "params": float(params),
            "nonzero_params": float(nonzero),
            "sparsity": 1.0 - nonzero / params if params else 0.0,
            "memory_bytes": float(memory),
        }
        on_disk = disk_bytes(model.path)
        if on_disk is not None:
            metrics["disk_bytes"] = float(on_disk)
        return metrics


@hookimpl
def register_evaluators(register):
    register(SizeEvaluator)
