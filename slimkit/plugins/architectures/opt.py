"""Adapter for Meta's OPT decoders."""

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


class OPTAdapter(ArchitectureAdapter):
    """OPT decoders: q/k/v/out attention, ReLU MLP ``fc1``/``fc2``, LayerNorm, learned positions."""

    name = "opt"
    model_types = ("opt",)
    # No "num_heads": these configs derive the head size as hidden_size / heads, so removing
    # heads cannot be expressed in the config and must be refused rather than saved broken.
    config_fields = {
        "num_layers": "num_hidden_layers",
        "intermediate_size": "ffn_dim",
        "hidden_size": "hidden_size",
    }

    def layout(self, model: nn.Module) -> ModelLayout:
        config: Any = model.config
        decoder = f"{base_prefix(model)}decoder"
        head_dim = config.hidden_size // config.num_attention_heads
        blocks = []
        for index, _ in enumerate(resolve(model, f"{decoder}.layers")):
            name = f"{decoder}.layers.{index}"
            q = linear_ref(model, "q", f"{name}.self_attn.q_proj")
            attention = AttentionLayout(
                num_heads=q.out_features // head_dim,
                num_kv_heads=q.out_features // head_dim,
                head_dim=head_dim,
                q=q,
                k=linear_ref(model, "k", f"{name}.self_attn.k_proj"),
                v=linear_ref(model, "v", f"{name}.self_attn.v_proj"),
                o=linear_ref(model, "o", f"{name}.self_attn.out_proj"),
            )
            up = linear_ref(model, "up", f"{name}.fc1")
            mlp = MLPLayout(
                up=up, down=linear_ref(model, "down", f"{name}.fc2"), intermediate_size=up.out_features
            )
            norms = (f"{name}.self_attn_layer_norm", f"{name}.final_layer_norm")
            blocks.append(BlockLayout(index, name, resolve(model, name), attention, mlp, norms))
        return ModelLayout(
            adapter=self.name,
            blocks_name=f"{decoder}.layers",
            blocks=tuple(blocks),
            embeddings=(f"{decoder}.embed_tokens", f"{decoder}.embed_positions"),
            final_norm=optional_module(model, f"{decoder}.final_layer_norm"),
            lm_head=optional_module(model, "lm_head"),
            tied_embeddings=bool(getattr(config, "tie_word_embeddings", True)),
        )


@hookimpl
def register_architectures(register):
    register(OPTAdapter)
