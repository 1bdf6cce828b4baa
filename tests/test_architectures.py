"""Architecture adapters: layouts of every bundled family, config rewriting and missing adapters.

Every model here is a tiny randomly initialised ``transformers`` model built from a config (no
downloads), plus the real bundled stories260K example.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch
import transformers as tf
from torch import nn

import slimkit
from slimkit.core.architecture import ArchitectureAdapter, LinearRef, ModelLayout
from slimkit.core.errors import ArchitectureError

VOCAB = 96
HIDDEN = 32
INPUT_IDS = torch.tensor([[1, 5, 9, 2, 17, 33, 4, 8, 61, 7], [3, 3, 40, 12, 0, 6, 90, 11, 2, 5]])


# -- tiny models ----------------------------------------------------------------------------


def _llama() -> nn.Module:
    config = tf.LlamaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=48, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, max_position_embeddings=64,
    )
    return tf.LlamaForCausalLM(config)


def _llama_base() -> nn.Module:
    config = tf.LlamaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=40, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
    )
    return tf.LlamaModel(config)


def _mistral() -> nn.Module:
    config = tf.MistralConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=56, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=64, tie_word_embeddings=False,
    )
    return tf.MistralForCausalLM(config)


def _qwen2() -> nn.Module:
    config = tf.Qwen2Config(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False,
    )
    return tf.Qwen2ForCausalLM(config)


def _gpt2() -> nn.Module:
    # n_inner=None: the MLP is 4 * n_embd wide.
    config = tf.GPT2Config(
        vocab_size=VOCAB, n_embd=HIDDEN, n_layer=3, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0
    )
    return tf.GPT2LMHeadModel(config)


def _opt() -> nn.Module:
    config = tf.OPTConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, ffn_dim=72, num_hidden_layers=3, num_attention_heads=4,
        max_position_embeddings=64, word_embed_proj_dim=HIDDEN, pad_token_id=1, bos_token_id=2, eos_token_id=2,
    )
    return tf.OPTForCausalLM(config)


def _bert() -> nn.Module:
    config = tf.BertConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=48, num_hidden_layers=3,
        num_attention_heads=4, max_position_embeddings=64,
    )
    return tf.BertModel(config)


def _roberta() -> nn.Module:
    config = tf.RobertaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=40, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=64, pad_token_id=1,
    )
    return tf.RobertaModel(config)


def _stories() -> nn.Module:
    return slimkit.load_model("example:stories260K").model


@dataclass(frozen=True)
class Case:
    """A model and what its layout must say, written out by hand (not read back from the adapter)."""

    build: Callable[[], nn.Module]
    adapter: str
    blocks_name: str
    num_blocks: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    tied: bool
    final_norm: bool
    lm_head: bool
    embeddings: int
    fused_qkv: bool = False
    conv1d: bool = False
    causal: bool = True


CASES: dict[str, Case] = {
    "llama-gqa-tied": Case(_llama, "llama", "model.layers", 3, HIDDEN, 4, 2, 8, 48, True, True, True, 1),
    "llama-base": Case(_llama_base, "llama", "layers", 2, HIDDEN, 4, 4, 8, 40, False, True, False, 1, causal=False),
    "mistral": Case(_mistral, "llama", "model.layers", 3, HIDDEN, 4, 1, 8, 56, False, True, True, 1),
    "qwen2": Case(_qwen2, "llama", "model.layers", 3, HIDDEN, 8, 2, 4, 64, False, True, True, 1),
    "gpt2": Case(
        _gpt2, "gpt2", "transformer.h", 3, HIDDEN, 4, 4, 8, 4 * HIDDEN, True, True, True, 2, fused_qkv=True, conv1d=True
    ),
    "opt": Case(_opt, "opt", "model.decoder.layers", 3, HIDDEN, 4, 4, 8, 72, True, True, True, 2),
    "bert": Case(_bert, "bert", "encoder.layer", 3, HIDDEN, 4, 4, 8, 48, True, False, False, 3, causal=False),
    "roberta": Case(_roberta, "bert", "encoder.layer", 2, HIDDEN, 2, 2, 16, 40, True, False, False, 3, causal=False),
    "stories260K": Case(_stories, "llama", "model.layers", 5, 64, 8, 4, 8, 172, True, True, True, 1),
}


def build(case: Case) -> nn.Module:
    torch.manual_seed(0)
    return case.build().eval()


def same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def expected_shape(case: Case, ref: LinearRef) -> tuple[int, int]:
    """``[out, in]`` of a projection, from the hand-written numbers of the case."""
    q_width, kv_width = case.heads * case.head_dim, case.kv_heads * case.head_dim
    return {
        "q": (q_width, case.hidden),
        "k": (kv_width, case.hidden),
        "v": (kv_width, case.hidden),
        "qkv": (q_width + 2 * kv_width, case.hidden),
        "o": (case.hidden, q_width),
        "gate": (case.intermediate, case.hidden),
        "up": (case.intermediate, case.hidden),
        "down": (case.hidden, case.intermediate),
    }[ref.role]


# -- layouts --------------------------------------------------------------------------------


@pytest.mark.parametrize("case_id", list(CASES))
def test_adapter_and_blocks(host, case_id):
    case = CASES[case_id]
    model = build(case)
    adapter = host.adapter_for(model)
    assert adapter.name == case.adapter
    layout = adapter.layout(model)
    assert isinstance(layout, ModelLayout)
    assert layout.adapter == case.adapter
    assert layout.blocks_name == case.blocks_name
    blocks = model.get_submodule(layout.blocks_name)
    assert isinstance(blocks, nn.ModuleList)
    assert len(layout.blocks) == len(blocks) == case.num_blocks
    for position, block in enumerate(layout.blocks):
        assert block.index == position
        assert block.name == f"{case.blocks_name}.{position}"
        assert block.module is blocks[position]
        attention = block.attention
        assert (attention.num_heads, attention.num_kv_heads, attention.head_dim) == (
            case.heads,
            case.kv_heads,
            case.head_dim,
        )
        assert attention.group_size == case.heads // case.kv_heads
        if case.fused_qkv:
            assert attention.qkv is not None and attention.q is attention.k is attention.v is None
        else:
            assert attention.qkv is None and None not in (attention.q, attention.k, attention.v)
        assert block.mlp.intermediate_size == case.intermediate
        gated = case.adapter == "llama"
        assert (block.mlp.gate is not None) == gated
        assert len(block.linears()) == (4 if case.fused_qkv else 6) + (1 if gated else 0)
        assert block.norms and all(isinstance(model.get_submodule(n), nn.Module) for n in block.norms)


@pytest.mark.parametrize("case_id", list(CASES))
def test_linear_refs_are_out_in_views(host, case_id):
    case = CASES[case_id]
    model = build(case)
    layout = host.adapter_for(model).layout(model)
    refs = list(layout.linears())
    assert len(refs) == sum(len(block.linears()) for block in layout.blocks) > 0
    for block, ref in refs:
        assert ref.name.startswith(block.name + ".")
        module = model.get_submodule(ref.name)
        assert ref.module is module
        assert ref.weight is module.weight
        view = ref.weight_out_in()
        assert tuple(view.shape) == (ref.out_features, ref.in_features) == expected_shape(case, ref)
        assert same_storage(view, module.weight), f"{ref.name}: weight_out_in() copied the weight"
        if case.conv1d:
            assert ref.transposed and type(module).__name__ == "Conv1D"
            assert tuple(module.weight.shape) == (ref.in_features, ref.out_features)
        else:
            assert not ref.transposed and isinstance(module, nn.Linear)
            assert (module.out_features, module.in_features) == (ref.out_features, ref.in_features)
        # Writing through the view changes the module's weight (it is a view, not a copy).
        with torch.no_grad():
            row = ref.out_features - 1
            before = view[row, 0].item()
            view[row, 0] = 123.0
            stored = module.weight[0, row] if ref.transposed else module.weight[row, 0]
            assert stored.item() == 123.0
            view[row, 0] = before
    roles = {ref.role for _, ref in layout.linears(roles=("up", "down"))}
    assert roles == {"up", "down"}


@pytest.mark.parametrize("case_id", list(CASES))
def test_embeddings_norm_head_and_tying(host, case_id):
    case = CASES[case_id]
    model = build(case)
    layout = host.adapter_for(model).layout(model)
    config: Any = model.config
    assert len(layout.embeddings) == case.embeddings
    for name in layout.embeddings:
        assert isinstance(model.get_submodule(name), nn.Embedding)
    word_embeddings = model.get_submodule(layout.embeddings[0])
    assert word_embeddings.num_embeddings == config.vocab_size
    if case.final_norm:
        assert layout.final_norm is not None
        norm = model.get_submodule(layout.final_norm)
        assert "norm" in type(norm).__name__.lower()
    else:
        assert layout.final_norm is None
    assert layout.tied_embeddings is case.tied
    if case.lm_head:
        assert layout.lm_head is not None
        head = model.get_submodule(layout.lm_head)
        assert isinstance(head, nn.Linear) and head.out_features == config.vocab_size
        assert same_storage(head.weight, word_embeddings.weight) is case.tied
    else:
        assert layout.lm_head is None


def test_layout_accepts_a_loaded_model(host):
    loaded = slimkit.load_model("example:stories260K")
    assert host.adapter_for(loaded).name == "llama"


# -- rewrite_config round trips -------------------------------------------------------------


def _outputs(model: nn.Module, causal: bool) -> torch.Tensor:
    with torch.no_grad():
        out = model(input_ids=INPUT_IDS, use_cache=False) if causal else model(input_ids=INPUT_IDS)
    return out.logits if causal else out.last_hidden_state


def _reload(model: nn.Module, causal: bool, folder) -> nn.Module:
    """Save with ``save_pretrained`` and load back with plain ``transformers`` Auto classes."""
    model.save_pretrained(folder)
    auto = tf.AutoModelForCausalLM if causal else tf.AutoModel
    reloaded, info = auto.from_pretrained(folder, output_loading_info=True)
    assert type(reloaded) is type(model)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return reloaded.eval()


def _replace_weight(ref: LinearRef, out_in: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Give ``ref``'s module a new ``[out, in]`` weight (and bias), fixing the size attributes."""
    module = ref.module
    weight = out_in.t() if ref.transposed else out_in
    module.weight = nn.Parameter(weight.contiguous().clone())
    if bias is not None:
        module.bias = nn.Parameter(bias.contiguous().clone())
    out_features, in_features = out_in.shape
    if isinstance(module, nn.Linear):
        module.in_features, module.out_features = in_features, out_features
    else:  # transformers Conv1D
        module.nf, module.nx = out_features, in_features


def shrink_mlp(model: nn.Module, adapter: ArchitectureAdapter, keep: torch.Tensor) -> None:
    """Keep the intermediate neurons ``keep`` in every block (same count everywhere)."""
    with torch.no_grad():
        for block in adapter.layout(model).blocks:
            for ref in (block.mlp.gate, block.mlp.up):
                if ref is not None:
                    bias = getattr(ref.module, "bias", None)
                    _replace_weight(ref, ref.weight_out_in()[keep], None if bias is None else bias[keep])
            down = block.mlp.down
            _replace_weight(down, down.weight_out_in()[:, keep], None)
    adapter.rewrite_config(model.config, intermediate_size=len(keep))


ROUND_TRIP = ["llama-gqa-tied", "llama-base", "mistral", "qwen2", "gpt2", "opt", "bert", "roberta", "stories260K"]


@pytest.mark.parametrize("case_id", ROUND_TRIP)
def test_drop_last_block_round_trip(host, case_id, tmp_path):
    case = CASES[case_id]
    model = build(case)
    adapter = host.adapter_for(model)
    blocks = model.get_submodule(adapter.layout(model).blocks_name)
    before = _outputs(model, case.causal)
    del blocks[len(blocks) - 1]
    adapter.rewrite_config(model.config, kept_layers=list(range(case.num_blocks - 1)))
    after = _outputs(model, case.causal)
    assert not torch.allclose(before, after), "dropping a block should change the outputs"
    reloaded = _reload(model, case.causal, tmp_path / "model")
    assert len(adapter.layout(reloaded).blocks) == case.num_blocks - 1
    torch.testing.assert_close(_outputs(reloaded, case.causal), after, rtol=0, atol=0)


@pytest.mark.parametrize("case_id", ROUND_TRIP)
def test_shrink_mlp_round_trip(host, case_id, tmp_path):
    case = CASES[case_id]
    model = build(case)
    adapter = host.adapter_for(model)
    generator = torch.Generator().manual_seed(1)
    keep = torch.randperm(case.intermediate, generator=generator)[: case.intermediate * 3 // 4].sort().values
    shrink_mlp(model, adapter, keep)
    layout = adapter.layout(model)
    assert {block.mlp.intermediate_size for block in layout.blocks} == {len(keep)}
    after = _outputs(model, case.causal)
    reloaded = _reload(model, case.causal, tmp_path / "model")
    assert {b.mlp.intermediate_size for b in adapter.layout(reloaded).blocks} == {len(keep)}
    torch.testing.assert_close(_outputs(reloaded, case.causal), after, rtol=0, atol=0)


def test_kept_layers_keeps_layer_types_aligned(host, tmp_path):
    """Dropping a middle block of a Qwen2 with mixed sliding/full attention keeps each layer's type."""
    torch.manual_seed(0)
    config = tf.Qwen2Config(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=48, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        use_sliding_window=True, sliding_window=3,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
    )
    model = tf.Qwen2ForCausalLM(config).eval()
    adapter = host.adapter_for(model)
    del model.model.layers[1]
    adapter.rewrite_config(model.config, kept_layers=[0, 2])
    assert model.config.num_hidden_layers == 2
    assert model.config.layer_types == ["sliding_attention", "full_attention"]
    after = _outputs(model, causal=True)  # use_cache=False: layer_idx 2 of the last block is harmless
    reloaded = _reload(model, True, tmp_path / "model")
    assert reloaded.config.layer_types == ["sliding_attention", "full_attention"]
    torch.testing.assert_close(_outputs(reloaded, causal=True), after, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("case_id", "field"),
    [("llama-gqa-tied", "vocab_size"), ("gpt2", "num_kv_heads"), ("opt", "head_dim"), ("bert", "num_kv_heads")],
)
def test_rewrite_unsupported_field(host, case_id, field):
    model = build(CASES[case_id])
    adapter = host.adapter_for(model)
    before = model.config.to_dict()
    with pytest.raises(ArchitectureError) as raised:
        adapter.rewrite_config(model.config, **{field: 2})
    message = str(raised.value)
    assert repr(adapter.name) in message and repr(field) in message
    assert "\n" not in message
    for supported in adapter.config_fields:
        assert supported in message
    assert model.config.to_dict() == before


def test_rejected_rewrite_leaves_config_untouched(host):
    model = build(CASES["qwen2"])
    adapter = host.adapter_for(model)
    before = model.config.to_dict()
    with pytest.raises(ArchitectureError):
        adapter.rewrite_config(model.config, kept_layers=[0, 1], bogus=1)
    assert model.config.to_dict() == before


# -- models without an adapter ---------------------------------------------------------------


def _installed_listed(message: str, host) -> None:
    assert "installed adapters" in message
    for name, adapter in host.adapters().items():
        assert name in message
        for model_type in adapter.model_types:
            assert model_type in message


def test_no_adapter_for_t5(host):
    torch.manual_seed(0)
    config = tf.T5Config(vocab_size=VOCAB, d_model=HIDDEN, d_kv=8, d_ff=48, num_layers=1, num_heads=4)
    model = tf.T5ForConditionalGeneration(config)
    with pytest.raises(ArchitectureError) as raised:
        host.adapter_for(model)
    message = str(raised.value)
    assert "T5ForConditionalGeneration" in message and "'t5'" in message
    _installed_listed(message, host)


def test_no_adapter_for_plain_module(host):
    model = nn.Sequential(nn.Linear(4, 4))  # no config at all
    with pytest.raises(ArchitectureError) as raised:
        host.adapter_for(model)
    message = str(raised.value)
    assert "Sequential" in message and "None" in message
    _installed_listed(message, host)


def test_no_adapter_names_the_model_class_not_its_inner_model(host):
    torch.manual_seed(0)
    config = tf.GemmaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=48, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=1, head_dim=8,
    )
    with pytest.raises(ArchitectureError, match="GemmaForCausalLM"):
        host.adapter_for(tf.GemmaForCausalLM(config))


def test_find_architecture_hook_sees_the_given_model(host):
    seen = []

    class Spy:
        @slimkit.hookimpl(tryfirst=True)
        def find_architecture(self, model, adapters):
            seen.append(model)
            return None

    host.register(Spy(), name="spy")
    model = build(CASES["llama-gqa-tied"])
    assert host.adapter_for(model).name == "llama"
    assert seen == [model]


# -- attention head pruning round trips ------------------------------------------------------


def prune_heads(model: nn.Module, adapter: ArchitectureAdapter, drop_kv_head: int) -> tuple[int, int]:
    """Remove key/value head ``drop_kv_head`` and its group of query heads from every block.

    Returns the new ``(num_heads, num_kv_heads)``.
    """
    with torch.no_grad():
        for block in adapter.layout(model).blocks:
            att = block.attention
            hd, group = att.head_dim, att.group_size
            kept_kv = [h for h in range(att.num_kv_heads) if h != drop_kv_head]
            kept_q = [kv * group + i for kv in kept_kv for i in range(group)]
            q_rows = torch.tensor([h * hd + d for h in kept_q for d in range(hd)])
            kv_rows = torch.tensor([h * hd + d for h in kept_kv for d in range(hd)])

            def rows(ref: LinearRef, index: torch.Tensor, offset: int = 0) -> None:
                bias = getattr(ref.module, "bias", None)
                _replace_weight(
                    ref, ref.weight_out_in()[index + offset], None if bias is None else bias[index + offset]
                )

            if att.qkv is not None:  # fused [q | k | v]
                width = att.num_heads * hd
                index = torch.cat([q_rows, kv_rows + width, kv_rows + 2 * width])
                rows(att.qkv, index)
            else:
                rows(att.q, q_rows)
                rows(att.k, kv_rows)
                rows(att.v, kv_rows)
            _replace_weight(att.o, att.o.weight_out_in()[:, q_rows], getattr(att.o.module, "bias", None))
            # transformers attention modules cache their head counts
            for attr, value in (("num_heads", len(kept_q)), ("num_attention_heads", len(kept_q)),
                                ("num_key_value_heads", len(kept_kv))):
                for module in block.module.modules():
                    if hasattr(module, attr) and isinstance(getattr(module, attr), int):
                        setattr(module, attr, value)
            for module in block.module.modules():
                if hasattr(module, "all_head_size"):
                    module.all_head_size = len(kept_q) * hd
                if hasattr(module, "split_size"):
                    module.split_size = len(kept_q) * hd
                if hasattr(module, "num_key_value_groups"):
                    module.num_key_value_groups = group
    return len(kept_q), len(kept_kv)




@pytest.mark.parametrize(
    "case_id",
    [
        "llama-gqa-tied",
        "mistral",
        "qwen2",
        "gpt2",
        "opt",
        "bert",
    ],
)
def test_prune_heads_round_trip(host, case_id, tmp_path):
    case = CASES[case_id]
    model = build(case)
    adapter = host.adapter_for(model)
    heads, kv_heads = prune_heads(model, adapter, drop_kv_head=1)
    block = adapter.layout(model).blocks[0]
    assert (block.attention.num_heads, block.attention.num_kv_heads) == (heads, kv_heads)
    changes = {"num_heads": heads}
    if "num_kv_heads" in adapter.config_fields:
        changes["num_kv_heads"] = kv_heads
    try:
        adapter.rewrite_config(model.config, **changes)
    except ArchitectureError as error:  # an adapter may refuse a change its config cannot express
        assert "num_heads" in str(error)
        return
    after = _outputs(model, case.causal)
    reloaded = _reload(model, case.causal, tmp_path / "model")
    attention = adapter.layout(reloaded).blocks[0].attention
    assert (attention.num_heads, attention.num_kv_heads, attention.head_dim) == (heads, kv_heads, case.head_dim)
    torch.testing.assert_close(_outputs(reloaded, case.causal), after, rtol=0, atol=0)
