"""Adapter for BERT-style encoders (BERT, RoBERTa, MiniLM sentence encoders)."""

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


class BertAdapter(ArchitectureAdapter):
    """BERT-style encoders: query/key/value + output dense, intermediate/output MLP, post-LayerNorm."""

    name = "bert"
    model_types = ("bert", "roberta")
    # No "num_heads": these configs derive the head size as hidden_size / heads, so removing
    # heads cannot be expressed in the config and must be refused rather than saved broken.
    config_fields = {
        "num_layers": "num_hidden_layers",
        "intermediate_size": "intermediate_size",
        "hidden_size": "hidden_size",
    }

    def layout(self, model: nn.Module) -> ModelLayout:
        config: Any = model.config
        prefix = base_prefix(model)
        head_dim = config.hidden_size // config.num_attention_heads
        blocks = []
        for index, _ in enumerate(resolve(model, f"{prefix}encoder.layer")):
            name = f"{prefix}encoder.layer.{index}"
            q = linear_ref(model, "q", f"{name}.attention.self.query")
            attention = AttentionLayout(
                num_heads=q.out_features // head_dim,
                num_kv_heads=q.out_features // head_dim,
                head_dim=head_dim,
                q=q,
                k=linear_ref(model, "k", f"{name}.attention.self.key"),
                v=linear_ref(model, "v", f"{name}.attention.self.value"),
                o=linear_ref(model, "o", f"{name}.attention.output.dense"),
            )
            up = linear_ref(model, "up", f"{name}.intermediate.dense")
            mlp = MLPLayout(
                up=up, down=linear_ref(model, "down", f"{name}.output.dense"), intermediate_size=up.out_features
            )
            norms = (f"{name}.attention.output.LayerNorm", f"{name}.output.LayerNorm")
            blocks.append(BlockLayout(index, name, resolve(model, name), attention, mlp, norms))
        embeddings = tuple(
            n
            for n in (
                f"{prefix}embeddings.word_embeddings",
                f"{prefix}embeddings.position_embeddings",
                f"{prefix}embeddings.token_type_embeddings",
            )
            if optional_module(model, n)
        )
        return ModelLayout(
            adapter=self.name,
            blocks_name=f"{prefix}encoder.layer",
            blocks=tuple(blocks),
            embeddings=embeddings,
            final_norm=None,
            lm_head=optional_module(model, "cls.predictions.decoder"),
            tied_embeddings=bool(getattr(config, "tie_word_embeddings", True)),
        )


@hookimpl
def register_architectures(register):
    register(BertAdapter)
