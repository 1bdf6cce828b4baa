"""Adapter for the Llama family (Llama 2/3, SmolLM, TinyLlama, Mistral, Qwen2): GQA, tied embeddings."""

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


class LlamaAdapter(ArchitectureAdapter):
    """Llama-style decoders: q/k/v/o attention with grouped KV heads, gated SiLU MLP, RMSNorm."""

    name = "llama"
    model_types = ("llama", "mistral", "qwen2")
    config_fields = {
        "num_layers": "num_hidden_layers",
        "num_heads": "num_attention_heads",
        "num_kv_heads": "num_key_value_heads",
        "head_dim": "head_dim",
        "intermediate_size": "intermediate_size",
        "hidden_size": "hidden_size",
    }

    def layout(self, model: nn.Module) -> ModelLayout:
        config: Any = model.config
        prefix = base_prefix(model)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        blocks = []
        for index, _ in enumerate(resolve(model, f"{prefix}layers")):
            name = f"{prefix}layers.{index}"
            q = linear_ref(model, "q", f"{name}.self_attn.q_proj")
            k = linear_ref(model, "k", f"{name}.self_attn.k_proj")
            attention = AttentionLayout(
                # Counted from the shapes, so the layout stays right after heads are pruned.
                num_heads=q.out_features // head_dim,
                num_kv_heads=k.out_features // head_dim,
                head_dim=head_dim,
                q=q,
                k=k,
                v=linear_ref(model, "v", f"{name}.self_attn.v_proj"),
                o=linear_ref(model, "o", f"{name}.self_attn.o_proj"),
            )
            up = linear_ref(model, "up", f"{name}.mlp.up_proj")
            mlp = MLPLayout(
                up=up,
                gate=linear_ref(model, "gate", f"{name}.mlp.gate_proj"),
                down=linear_ref(model, "down", f"{name}.mlp.down_proj"),
                intermediate_size=up.out_features,
            )
            norms = (f"{name}.input_layernorm", f"{name}.post_attention_layernorm")
            blocks.append(BlockLayout(index, name, resolve(model, name), attention, mlp, norms))
        return ModelLayout(
            adapter=self.name,
            blocks_name=f"{prefix}layers",
            blocks=tuple(blocks),
            embeddings=(f"{prefix}embed_tokens",),
            final_norm=optional_module(model, f"{prefix}norm"),
            lm_head=optional_module(model, "lm_head"),
            tied_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        )


    def rewrite_config(self, config: Any, **changes: Any) -> None:
        # Some family members (Qwen2) derive head_dim from hidden_size / heads when the config
        # has none; pin it before the head count changes so the reloaded shapes stay the same.
        if "num_heads" in changes and not getattr(config, "head_dim", None):
            head_dim = config.hidden_size // config.num_attention_heads
            super().rewrite_config(config, head_dim=head_dim)
        super().rewrite_config(config, **changes)


@hookimpl
def register_architectures(register):
    register(LlamaAdapter)
