"""Adapters described by module paths instead of code.

Most transformer families differ only in what their modules are called. A
:class:`ModuleMapAdapter` subclass declares those names as class attributes and inherits a
complete :meth:`~slimkit.core.architecture.ArchitectureAdapter.layout`::

    class MyAdapter(ModuleMapAdapter):
        name = "mine"
        model_types = ("mine",)
        blocks_path = "layers"
        projections = {"q": "attn.q", "k": "attn.k", "v": "attn.v", "o": "attn.o",
                       "up": "mlp.fc1", "down": "mlp.fc2"}
        block_norms = ("ln1", "ln2")
        embedding_paths = ("embed",)
        final_norm_path = "norm"

Paths of blocks, embeddings and the final norm are relative to the base model (so one adapter
serves ``XForCausalLM`` and ``XModel``); projections and norms are relative to each block; the
LM head is relative to the model root.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, cast

from torch import nn

from slimkit.core.architecture import (
    ArchitectureAdapter,
    AttentionLayout,
    BlockLayout,
    LinearRef,
    MLPLayout,
    ModelLayout,
    base_prefix,
    linear_ref,
    optional_module,
    resolve,
)
from slimkit.core.roles import Role


class ModuleMapAdapter(ArchitectureAdapter):
    """An adapter whose layout follows from module paths declared as class attributes."""

    blocks_path: ClassVar[str]
    #: role -> path inside a block; either "qkv" (fused) or "q", "k" and "v"; "gate" is optional.
    projections: ClassVar[dict[Role, str]]
    block_norms: ClassVar[tuple[str, ...]] = ()
    embedding_paths: ClassVar[tuple[str, ...]] = ()
    final_norm_path: ClassVar[str | None] = None
    lm_head_path: ClassVar[str | None] = "lm_head"
    #: value of ``tied_embeddings`` when the config does not say
    tied_by_default: ClassVar[bool] = True

    def head_dim(self, config: Any) -> int:
        """Size of one attention head (default: hidden size over the configured head count)."""
        return config.hidden_size // config.num_attention_heads

    def layout(self, model: nn.Module) -> ModelLayout:
        config: Any = model.config
        prefix = base_prefix(model)
        head_dim = self.head_dim(config)
        blocks_name = prefix + self.blocks_path
        blocks = []
        for index in range(len(cast(nn.ModuleList, resolve(model, blocks_name)))):
            name = f"{blocks_name}.{index}"
            refs: dict[str, LinearRef] = {
                role: linear_ref(model, role, f"{name}.{path}") for role, path in self.projections.items()
            }
            blocks.append(
                BlockLayout(
                    index=index,
                    name=name,
                    module=resolve(model, name),
                    attention=self._attention(refs, head_dim),
                    mlp=MLPLayout(
                        up=refs["up"], down=refs["down"], gate=refs.get("gate"),
                        intermediate_size=refs["up"].out_features,
                    ),
                    norms=tuple(f"{name}.{norm}" for norm in self.block_norms),
                )
            )
        return ModelLayout(
            adapter=self.name,
            blocks_name=blocks_name,
            blocks=tuple(blocks),
            embeddings=tuple(p for p in (prefix + e for e in self.embedding_paths) if optional_module(model, p)),
            final_norm=optional_module(model, prefix + self.final_norm_path) if self.final_norm_path else None,
            lm_head=optional_module(model, self.lm_head_path) if self.lm_head_path else None,
            tied_embeddings=bool(getattr(config, "tie_word_embeddings", self.tied_by_default)),
        )

    @staticmethod
    def _attention(refs: Mapping[str, LinearRef], head_dim: int) -> AttentionLayout:
        # Head counts come from the weight shapes, so a layout stays right after heads are pruned.
        if "qkv" in refs:
            heads = refs["qkv"].out_features // 3 // head_dim
            return AttentionLayout(heads, heads, head_dim, o=refs["o"], qkv=refs["qkv"])
        heads = refs["q"].out_features // head_dim
        kv_heads = refs["k"].out_features // head_dim
        return AttentionLayout(heads, kv_heads, head_dim, o=refs["o"], q=refs["q"], k=refs["k"], v=refs["v"])
