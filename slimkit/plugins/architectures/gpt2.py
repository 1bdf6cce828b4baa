"""Adapter for GPT-2: fused q/k/v projection and ``Conv1D`` layers that store weights as [in, out]."""

from __future__ import annotations

from typing import Any

from torch import nn

from slimkit import hookimpl
from slimkit.core.architecture import (
    ArchitectureAdapter,
    AttentionLayout,
    BlockLayout,
    MLPLayout,
    ModelLayout,
    base_prefix,
    linear_ref,
    optional_module,
    resolve,
)


class GPT2Adapter(ArchitectureAdapter):
    """GPT-2 decoders: fused ``c_attn`` (q|k|v), ``c_proj``, MLP ``c_fc``/``c_proj``, LayerNorm."""

    name = "gpt2"
    model_types = ("gpt2",)
    # No "num_heads": these configs derive the head size as hidden_size / heads, so removing
    # heads cannot be expressed in the config and must be refused rather than saved broken.
    config_fields = {
        "num_layers": "n_layer",
        "intermediate_size": "n_inner",
        "hidden_size": "n_embd",
    }

    def layout(self, model: nn.Module) -> ModelLayout:
        config: Any = model.config
        prefix = base_prefix(model)
        head_dim = config.n_embd // config.n_head
        blocks = []
        for index, _ in enumerate(resolve(model, f"{prefix}h")):
            name = f"{prefix}h.{index}"
            qkv = linear_ref(model, "qkv", f"{name}.attn.c_attn")
            heads = qkv.out_features // 3 // head_dim
            attention = AttentionLayout(
                num_heads=heads,
                num_kv_heads=heads,
                head_dim=head_dim,
                qkv=qkv,
                o=linear_ref(model, "o", f"{name}.attn.c_proj"),
            )
            up = linear_ref(model, "up", f"{name}.mlp.c_fc")
            mlp = MLPLayout(
                up=up,
                down=linear_ref(model, "down", f"{name}.mlp.c_proj"),
                intermediate_size=up.out_features,
            )
            norms = (f"{name}.ln_1", f"{name}.ln_2")
            blocks.append(BlockLayout(index, name, resolve(model, name), attention, mlp, norms))
        return ModelLayout(
            adapter=self.name,
            blocks_name=f"{prefix}h",
            blocks=tuple(blocks),
            embeddings=(f"{prefix}wte", f"{prefix}wpe"),
            final_norm=optional_module(model, f"{prefix}ln_f"),
            lm_head=optional_module(model, "lm_head"),
            tied_embeddings=bool(getattr(config, "tie_word_embeddings", True)),
        )


@hookimpl
def register_architectures(register):
    register(GPT2Adapter)
