"""Adapter for Meta's OPT decoders."""

from __future__ import annotations

from slimkit import ModuleMapAdapter, hookimpl


class OPTAdapter(ModuleMapAdapter):
    """OPT decoders: q/k/v/out attention, ReLU MLP ``fc1``/``fc2``, LayerNorm, learned positions."""

    name = "opt"
    model_types = ("opt",)
    blocks_path = "decoder.layers"
    projections = {
        "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.out_proj",
        "up": "fc1", "down": "fc2",
    }
    block_norms = ("self_attn_layer_norm", "final_layer_norm")
    embedding_paths = ("decoder.embed_tokens", "decoder.embed_positions")
    final_norm_path = "decoder.final_layer_norm"
    # No "num_heads": OPT derives the head size as hidden_size / heads (see gpt2.py).
    config_fields = {"num_layers": "num_hidden_layers", "intermediate_size": "ffn_dim", "hidden_size": "hidden_size"}


@hookimpl
def register_architectures(register):
    register(OPTAdapter)
