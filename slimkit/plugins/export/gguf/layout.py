"""Llama-family hyper-parameters and tensor names as llama.cpp reads them (``llama`` and ``deci``).

What llama.cpp's own converter (``convert_hf_to_gguf.py``, ``LlamaModel``/``DeciModel``) writes
for a Hugging Face Llama, done here from slimkit's layout instead of the checkpoint files:

* keys ``{arch}.context_length``, ``embedding_length``, ``block_count``, ``feed_forward_length``,
  ``attention.head_count``, ``attention.head_count_kv``, ``attention.key_length``/``value_length``
  (the head size), ``rope.dimension_count``, ``rope.freq_base``,
  ``attention.layer_norm_rms_epsilon`` and ``vocab_size``;
* the query and key rows permuted: Hugging Face rotates the two halves of each head
  (``rotate_half``), llama.cpp's rope (``GGML_ROPE_TYPE_NORM``) rotates adjacent pairs, so row
  ``(h, half, i)`` moves to ``(h, i, half)`` (:func:`rope_permutation`). It only reorders whole
  rows, so quantized rows move with their codes and scales unchanged;
* no ``output.weight`` when the head is tied to the token embedding (llama.cpp then uses
  ``token_embd.weight`` for both).

Blocks of different widths or head counts (structured pruning that differs per block) cannot be
described as ``llama`` (one ``feed_forward_length``, one head count; llama.cpp refuses per-layer
arrays there) and go out as ``deci``, whose keys take one value per block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

MODEL_TYPES = ("llama", "mistral")
ROPE_TYPES = ("default", "linear")


@dataclass(frozen=True)
class BlockShape:
    """One block's attention heads, key/value heads and MLP width."""

    heads: int
    kv_heads: int
    ffn: int


@dataclass(frozen=True)
class Hyper:
    """Everything the GGUF header says about the network (not the tokenizer)."""

    arch: str
    vocab: int
    context: int
    hidden: int
    head_dim: int
    blocks: tuple[BlockShape, ...]
    rms_eps: float
    rope_theta: float
    rope_linear: float | None

    @property
    def uniform(self) -> bool:
        return len(set(self.blocks)) <= 1


def _rope(config: Any) -> tuple[float, str, dict[str, Any]]:
    """``(theta, rope type, parameters)`` from a transformers 5 ``rope_parameters`` or a 4.x config."""
    params = dict(getattr(config, "rope_parameters", None) or {})
    scaling = dict(getattr(config, "rope_scaling", None) or {})
    params = {**scaling, **params}
    theta = params.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    kind = params.get("rope_type", params.get("type")) or "default"
    return float(theta), str(kind), params


def read_hyper(model: Any, layout: Any, architecture: str) -> tuple[Hyper | None, list[str]]:
    """The hyper-parameters of ``model`` (a LoadedModel) from its config and ``layout`` (its
    ``ModelLayout``), and every reason it cannot be written as ``architecture``
    (``auto``/``llama``/``deci``)."""
    config = model.config
    kind = getattr(config, "model_type", None)
    if kind not in MODEL_TYPES:
        return None, [f"architecture: the gguf exporter writes Llama-family decoders (model types "
                      f"{', '.join(MODEL_TYPES)}; structurally pruned ones as deci); {model.architecture} "
                      f"(model type {kind!r}) is not one of them"]
    problems = []
    act = getattr(config, "hidden_act", "silu")
    if act != "silu":
        problems.append(f"architecture: hidden_act {act!r}; llama.cpp's llama runs SiLU-gated MLPs only")
    for flag in ("attention_bias", "mlp_bias"):
        if getattr(config, flag, False):
            problems.append(f"architecture: {flag}=true (biases) is not written by the gguf exporter yet")
    theta, rope_type, params = _rope(config)
    if rope_type not in ROPE_TYPES:
        problems.append(f"architecture: rope type {rope_type!r} is not written by the gguf exporter "
                        f"(supported: {', '.join(ROPE_TYPES)})")
    window = getattr(config, "sliding_window", None)
    context = int(getattr(config, "max_position_embeddings", 2048))
    if window and window < context:
        problems.append(f"architecture: sliding-window attention (window {window} < context {context}) "
                        "is not written as llama (llama.cpp's llama attends to the whole context)")
    shapes = []
    for block in layout.blocks:
        if block.mlp.gate is None or block.attention.q is None:
            problems.append(f"{block.name}: not a gated-MLP, separate-q/k/v Llama block")
            continue
        shapes.append(BlockShape(block.attention.num_heads, block.attention.num_kv_heads,
                                 block.mlp.intermediate_size))
    if not layout.blocks:
        problems.append("architecture: the model has no decoder blocks")
    uniform = len(set(shapes)) <= 1
    arch = architecture if architecture != "auto" else ("llama" if uniform else "deci")
    if arch == "llama" and not uniform:
        widths = sorted({s.ffn for s in shapes})
        heads = sorted({(s.heads, s.kv_heads) for s in shapes})
        problems.append(f"architecture=llama: blocks differ (MLP widths {widths}, heads/KV heads {heads}); "
                        "llama.cpp loads per-block shapes only as deci: use architecture=deci or auto")
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
    hyper = Hyper(
        arch=arch, vocab=int(config.vocab_size), context=context, hidden=int(config.hidden_size),
        head_dim=head_dim, blocks=tuple(shapes), rms_eps=float(getattr(config, "rms_norm_eps", 1e-6)),
        rope_theta=theta, rope_linear=float(params["factor"]) if rope_type == "linear" else None,
    )
    return hyper, problems


def write_hyper(writer: Any, hyper: Hyper) -> None:
    """Add the network's keys to a ``gguf.GGUFWriter`` made for ``hyper.arch``."""
    import gguf

    per_block = hyper.arch == "deci"
    first = hyper.blocks[0]
    writer.add_vocab_size(hyper.vocab)
    writer.add_context_length(hyper.context)
    writer.add_embedding_length(hyper.hidden)
    writer.add_block_count(len(hyper.blocks))
    writer.add_feed_forward_length([b.ffn for b in hyper.blocks] if per_block else first.ffn)
    writer.add_head_count([b.heads for b in hyper.blocks] if per_block else first.heads)
    writer.add_head_count_kv([b.kv_heads for b in hyper.blocks] if per_block else first.kv_heads)
    writer.add_key_length(hyper.head_dim)
    writer.add_value_length(hyper.head_dim)
    writer.add_rope_dimension_count(hyper.head_dim)
    writer.add_rope_freq_base(hyper.rope_theta)
    writer.add_layer_norm_rms_eps(hyper.rms_eps)
    if hyper.rope_linear is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(hyper.rope_linear)


def rope_permutation(rows: int, heads: int) -> torch.Tensor:
    """Row order that turns a Hugging Face q (or k) projection into llama.cpp's: ``new = old[perm]``.
    Within each head, rows ``[first half | second half]`` become interleaved pairs."""
    half = rows // heads // 2
    return torch.arange(rows).reshape(heads, 2, half).transpose(1, 2).reshape(-1)


# GGUF tensor names (gguf.TENSOR_NAMES) of the parts slimkit's Llama layout names by role.
ROLE_TENSORS = {"q": "ATTN_Q", "k": "ATTN_K", "v": "ATTN_V", "o": "ATTN_OUT",
                "gate": "FFN_GATE", "up": "FFN_UP", "down": "FFN_DOWN"}
NORM_TENSORS = ("ATTN_NORM", "FFN_NORM")  # the block's norms in slimkit's order (input, post-attention)


def tensor_name(kind: str, block: int | None = None) -> str:
    """``gguf.TENSOR_NAMES`` entry ``kind`` (e.g. ``"ATTN_Q"``) for ``block``, with ``.weight``."""
    import gguf

    return gguf.TENSOR_NAMES[gguf.MODEL_TENSOR[kind]].format(bid=block) + ".weight"
