"""Adapter for the Llama family (Llama 2/3, SmolLM, TinyLlama, Mistral, Qwen2): GQA, tied embeddings."""

from __future__ import annotations

from typing import Any

from slimkit import ModuleMapAdapter, hookimpl


class LlamaAdapter(ModuleMapAdapter):
    """Llama-style decoders: q/k/v/o attention with grouped KV heads, gated SiLU MLP, RMSNorm."""

    name = "llama"
    model_types = ("llama", "mistral", "qwen2")
    blocks_path = "layers"
    projections = {
        "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
        "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj",
    }
    block_norms = ("input_layernorm", "post_attention_layernorm")
    embedding_paths = ("embed_tokens",)
    final_norm_path = "norm"
    tied_by_default = False
    config_fields = {
        "num_layers": "num_hidden_layers",
        "num_heads": "num_attention_heads",
        "num_kv_heads": "num_key_value_heads",
        "head_dim": "head_dim",
        "intermediate_size": "intermediate_size",
        "hidden_size": "hidden_size",
    }

    def head_dim(self, config: Any) -> int:
        return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads

    def rewrite_config(self, config: Any, **changes: Any) -> None:
        # Some family members (Qwen2) derive head_dim from hidden_size / heads when the config
        # has none; pin it before the head count changes so the reloaded shapes stay the same.
        if "num_heads" in changes and not getattr(config, "head_dim", None):
            super().rewrite_config(config, head_dim=self.head_dim(config))
        super().rewrite_config(config, **changes)


@hookimpl
def register_architectures(register):
    register(LlamaAdapter)
