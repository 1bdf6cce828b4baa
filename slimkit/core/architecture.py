"""Architecture adapters: where a model family keeps the parts that compression methods change.

Methods never hard-code module names. They ask the adapter for the model's :class:`ModelLayout`:
ordered decoder (or encoder) blocks, each with its attention projections and head counts (grouped
query attention included), its MLP projections and intermediate size, and its norms; plus the
embeddings, final norm and LM head. After a shape change (fewer neurons, heads or blocks) a method
calls :meth:`ArchitectureAdapter.rewrite_config` so the saved model reloads with plain
``transformers``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Literal

import torch
from torch import nn

from slimkit.core.errors import ArchitectureError
from slimkit.core.roles import Role


@dataclass(frozen=True)
class LinearRef:
    """One projection inside a block.

    ``transposed`` is true for layers that store ``weight`` as ``[in, out]`` (GPT-2's ``Conv1D``);
    :meth:`weight_out_in` always gives the ``[out, in]`` view methods reason about.
    """

    role: Role
    name: str
    module: nn.Module = field(repr=False, compare=False)
    in_features: int
    out_features: int
    transposed: bool = False

    @property
    def quantized(self) -> bool:
        """Whether the layer holds integer codes (a ``QuantizedLinear``) instead of a float weight."""
        return getattr(self.module, "grid", None) is not None

    @property
    def factorised(self) -> bool:
        """Whether the layer is a low-rank product (a ``LowRankLinear``) instead of one weight."""
        return getattr(self.module, "rank", None) is not None and hasattr(self.module, "down")

    @property
    def weight(self) -> torch.Tensor:
        if self.factorised:
            raise ArchitectureError(
                f"{self.name} is factorised (low rank): a method that reads or changes one weight matrix cannot "
                "work on it (put low-rank factorisation after it in the recipe, or densify first)"
            )
        if self.quantized:
            raise ArchitectureError(
                f"{self.name} is already quantized: its integer weights cannot be changed by another method "
                "(put quantization last in the recipe, or start from a dequantized copy)"
            )
        return self.module.weight  # type: ignore[return-value]

    def weight_out_in(self) -> torch.Tensor:
        """The weight as ``[out_features, in_features]`` (a view, shares storage)."""
        return self.weight.t() if self.transposed else self.weight


@dataclass(frozen=True)
class AttentionLayout:
    """Attention projections of one block. ``qkv`` is set instead of ``q``/``k``/``v`` when fused."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    o: LinearRef
    q: LinearRef | None = None
    k: LinearRef | None = None
    v: LinearRef | None = None
    qkv: LinearRef | None = None

    @property
    def group_size(self) -> int:
        """Query heads per key/value head (1 without grouped-query attention)."""
        return self.num_heads // self.num_kv_heads

    def linears(self) -> tuple[LinearRef, ...]:
        return tuple(ref for ref in (self.q, self.k, self.v, self.qkv, self.o) if ref is not None)


@dataclass(frozen=True)
class MLPLayout:
    """MLP projections of one block; ``gate`` is ``None`` for non-gated MLPs (GPT-2, OPT, BERT)."""

    up: LinearRef
    down: LinearRef
    intermediate_size: int
    gate: LinearRef | None = None

    def linears(self) -> tuple[LinearRef, ...]:
        return tuple(ref for ref in (self.gate, self.up, self.down) if ref is not None)


@dataclass(frozen=True)
class BlockLayout:
    """One transformer block, in model order."""

    index: int
    name: str
    module: nn.Module = field(repr=False, compare=False)
    attention: AttentionLayout
    mlp: MLPLayout
    norms: tuple[str, ...]

    def linears(self) -> tuple[LinearRef, ...]:
        return self.attention.linears() + self.mlp.linears()


@dataclass(frozen=True)
class ModelLayout:
    """Everything a method needs to find its way around one model."""

    adapter: str
    blocks_name: str
    blocks: tuple[BlockLayout, ...]
    embeddings: tuple[str, ...]
    final_norm: str | None
    lm_head: str | None
    tied_embeddings: bool

    def linears(self, roles: tuple[str, ...] | None = None) -> Iterator[tuple[BlockLayout, LinearRef]]:
        """Every block projection in model order, optionally only those whose role is in ``roles``."""
        for block in self.blocks:
            for ref in block.linears():
                if roles is None or ref.role in roles:
                    yield block, ref


#: Canonical names of the config fields a shape change can touch.
CanonicalField = Literal[
    "num_layers", "num_heads", "num_kv_heads", "head_dim", "intermediate_size", "hidden_size"
]


class ArchitectureAdapter:
    """Base class for adapters. Subclasses set ``name``, ``model_types`` and ``config_fields``,
    and implement :meth:`layout`.

    ``config_fields`` maps canonical field names to the attribute names of the family's
    ``transformers`` config, which is all :meth:`rewrite_config` needs.
    """

    name: ClassVar[str]
    #: ``config.model_type`` values this adapter understands.
    model_types: ClassVar[tuple[str, ...]] = ()
    config_fields: ClassVar[dict[str, str]] = {}
    description: ClassVar[str] = ""

    def matches(self, model: nn.Module) -> bool:
        """Whether this adapter understands ``model`` (by default: its ``config.model_type``)."""
        config = getattr(model, "config", None)
        return getattr(config, "model_type", None) in self.model_types

    def layout(self, model: nn.Module) -> ModelLayout:  # pragma: no cover - abstract
        raise NotImplementedError

    def rewrite_config(self, config: Any, **changes: Any) -> None:
        """Write shape changes (canonical names, see :data:`CanonicalField`) into ``config``.

        ``kept_layers=[...]`` (original indices of the blocks that remain) sets the layer count
        and keeps per-layer config lists such as ``layer_types`` aligned.

        Unknown or unsupported fields raise :class:`ArchitectureError` rather than being ignored,
        because a silently stale config produces a model that will not reload.
        """
        unknown = [name for name in changes if name != "kept_layers" and name not in self.config_fields]
        if unknown:
            supported = ", ".join(sorted(self.config_fields)) or "none"
            raise ArchitectureError(
                f"adapter {self.name!r} cannot rewrite {', '.join(map(repr, unknown))} (supported: {supported})"
            )
        kept_layers = changes.pop("kept_layers", None)
        if kept_layers is not None:
            kept = list(kept_layers)
            changes.setdefault("num_layers", len(kept))
            # Some configs list a type per layer (sliding vs full attention); keep them aligned.
            layer_types = getattr(config, "layer_types", None)
            if isinstance(layer_types, list):
                config.layer_types = [layer_types[i] for i in kept]
        for canonical, value in changes.items():
            setattr(config, self.config_fields[canonical], value)


def resolve(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (``""`` is the model itself), with a clear error if absent."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise ArchitectureError(f"{type(model).__name__} has no submodule {name!r}") from None


def set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at the dotted path ``name`` under ``root`` (replacing what was there)."""
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def linear_ref(model: nn.Module, role: Role, name: str) -> LinearRef:
    """A :class:`LinearRef` for an ``nn.Linear`` or a GPT-2 style ``Conv1D`` called ``name``."""
    module = resolve(model, name)
    if getattr(module, "grid", None) is not None and hasattr(module, "in_features"):  # a QuantizedLinear
        return LinearRef(role, name, module, int(module.in_features), int(module.out_features))  # type: ignore[arg-type]
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ArchitectureError(f"{name} ({type(module).__name__}) is not a linear layer")
    if isinstance(module, nn.Linear):
        return LinearRef(role, name, module, module.in_features, module.out_features)
    if type(module).__name__ == "Conv1D":  # transformers.pytorch_utils.Conv1D stores [in, out]
        return LinearRef(role, name, module, weight.shape[0], weight.shape[1], transposed=True)
    # Quantized or custom linears keep the nn.Linear convention unless they say otherwise.
    out_features, in_features = weight.shape
    return LinearRef(role, name, module, in_features, out_features)


def base_prefix(model: nn.Module) -> str:
    """``"model."``/``"transformer."``/``"bert."`` when ``model`` wraps a base model, else ``""``.

    Lets one adapter serve both ``LlamaForCausalLM`` and a bare ``LlamaModel``.
    """
    prefix = getattr(model, "base_model_prefix", "")
    if prefix and isinstance(getattr(model, prefix, None), nn.Module):
        return prefix + "."
    return ""


def optional_module(model: nn.Module, name: str) -> str | None:
    """``name`` if the model has such a submodule (not ``None``), else ``None``."""
    try:
        return name if model.get_submodule(name) is not None else None
    except AttributeError:
        return None
