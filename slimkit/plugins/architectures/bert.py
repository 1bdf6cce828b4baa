"""Adapter for BERT-style encoders (BERT, RoBERTa, MiniLM sentence encoders)."""

from __future__ import annotations

from slimkit import ModuleMapAdapter, hookimpl


class BertAdapter(ModuleMapAdapter):
    """BERT-style encoders: query/key/value + output dense, intermediate/output MLP, post-LayerNorm."""

    name = "bert"
    model_types = ("bert", "roberta")
    blocks_path = "encoder.layer"
    projections = {
        "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
        "o": "attention.output.dense", "up": "intermediate.dense", "down": "output.dense",
    }
    block_norms = ("attention.output.LayerNorm", "output.LayerNorm")
    embedding_paths = (
        "embeddings.word_embeddings", "embeddings.position_embeddings", "embeddings.token_type_embeddings",
    )
    lm_head_path = "cls.predictions.decoder"
    # No "num_heads": BERT derives the head size as hidden_size / heads (see gpt2.py).
    config_fields = {
        "num_layers": "num_hidden_layers", "intermediate_size": "intermediate_size", "hidden_size": "hidden_size",
    }


@hookimpl
def register_architectures(register):
    register(BertAdapter)
