"""Adapter for GPT-2: fused q/k/v projection and ``Conv1D`` layers that store weights as [in, out]."""

from __future__ import annotations

from typing import Any

from slimkit import ModuleMapAdapter, hookimpl


class GPT2Adapter(ModuleMapAdapter):
    """GPT-2 decoders: fused ``c_attn`` (q|k|v), ``c_proj``, MLP ``c_fc``/``c_proj``, LayerNorm."""

    name = "gpt2"
    model_types = ("gpt2",)
    blocks_path = "h"
    projections = {"qkv": "attn.c_attn", "o": "attn.c_proj", "up": "mlp.c_fc", "down": "mlp.c_proj"}
    block_norms = ("ln_1", "ln_2")
    embedding_paths = ("wte", "wpe")
    final_norm_path = "ln_f"
    # No "num_heads": GPT-2 derives the head size as n_embd / n_head, so removing heads cannot be
    # expressed in its config and must be refused rather than saved broken.
    config_fields = {"num_layers": "n_layer", "intermediate_size": "n_inner", "hidden_size": "n_embd"}

    def head_dim(self, config: Any) -> int:
        return config.n_embd // config.n_head


@hookimpl
def register_architectures(register):
    register(GPT2Adapter)
