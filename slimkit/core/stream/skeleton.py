"""A model with no weights in memory, and the means to give one part of it real weights and take
them away again.

:func:`parameters_on_meta` builds a module whose parameters live on the meta device (a shape and
a dtype, no storage, no random initialisation), while buffers such as rotary frequencies, which
checkpoints do not hold, are computed for real. :func:`materialise` fills one submodule's
parameters and persistent buffers from a :class:`~slimkit.core.stream.checkpoint.Checkpoint`;
:func:`release` puts them back on the meta device. Tied parameters (an output head sharing the
token embedding's table) are found once by identity and tied again after every fill.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Build modules with their parameters on the meta device (no memory, no random init) while
    buffers (rotary frequencies) are created for real."""
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(module, name, param)
        if param is not None:
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = register  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


def build_skeleton(model_class: Any, config: Any, dtype: torch.dtype) -> nn.Module:
    """``model_class`` built from ``config`` in ``dtype`` with every parameter on the meta device."""
    build = getattr(model_class, "from_config", None) or model_class._from_config
    with parameters_on_meta():
        model = build(config, dtype=dtype)
    tie = getattr(model, "tie_weights", None)
    if callable(tie):  # the parameters were replaced after the model tied them: tie them again
        tie()
    model.eval()
    return model


def tied_groups(model: nn.Module) -> dict[str, str]:
    """Parameter names that are another parameter (tied), mapped to the first name holding it."""
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first:
            aliases[name] = first[id(param)]
        else:
            first[id(param)] = name
    return aliases


def stored_entries(module: nn.Module) -> Iterator[tuple[str, str, nn.Module, torch.Tensor]]:
    """``(qualified name, attribute, owner, tensor)`` of every parameter and persistent buffer
    under ``module`` (each object once), as a state dict would list them."""
    seen: set[int] = set()
    for owner_name, owner in module.named_modules():
        prefix = f"{owner_name}." if owner_name else ""
        for attribute, param in owner._parameters.items():
            if param is not None and id(param) not in seen:
                seen.add(id(param))
                yield prefix + attribute, attribute, owner, param
        transient: set[str] = getattr(owner, "_non_persistent_buffers_set", set())
        for attribute, buffer in owner._buffers.items():
            if buffer is not None and attribute not in transient and id(buffer) not in seen:
                seen.add(id(buffer))
                yield prefix + attribute, attribute, owner, buffer


def _put(owner: nn.Module, attribute: str, tensor: torch.Tensor, *, parameter: bool) -> None:
    if parameter:
        old = owner._parameters[attribute]
        owner._parameters[attribute] = nn.Parameter(tensor, requires_grad=bool(old is not None and old.requires_grad))
    else:
        owner._buffers[attribute] = tensor


def materialise(module: nn.Module, prefix: str, tensors: dict[str, torch.Tensor],
                device: torch.device) -> list[nn.Module]:
    """Give every meta parameter and buffer under ``module`` its tensor from ``tensors`` (keyed by
    ``prefix`` + local name), floating point ones cast to the skeleton's dtype, all moved to
    ``device``. Returns the modules that were filled (to be emptied even if a method has taken
    them out of the model since, e.g. a linear replaced by a quantized one that something still
    refers to)."""
    filled: list[nn.Module] = []
    for name, attribute, owner, tensor in list(stored_entries(module)):
        if not tensor.is_meta:
            continue
        value = tensors.get(prefix + name)
        if value is None:  # tied to a tensor filled elsewhere (retie() joins them)
            continue
        if value.is_floating_point() and tensor.is_floating_point():
            value = value.to(tensor.dtype)  # the skeleton's dtype: the model's, or a layer's own (fp16 scales)
        _put(owner, attribute, value.to(device), parameter=attribute in owner._parameters)
        if not filled or filled[-1] is not owner:
            filled.append(owner)
    return filled


def release(module: nn.Module) -> None:
    """Put every parameter and persistent buffer under ``module`` back on the meta device."""
    for _, attribute, owner, tensor in list(stored_entries(module)):
        if not tensor.is_meta:
            _put(owner, attribute, torch.empty(tensor.shape, dtype=tensor.dtype, device="meta"),
                 parameter=attribute in owner._parameters)


def retie(model: nn.Module, aliases: dict[str, str]) -> None:
    """Make every aliased parameter the very parameter it aliases again (after a fill or release
    replaced one side of the tie)."""
    for alias, source in aliases.items():
        owner_name, _, attribute = alias.rpartition(".")
        source_owner, _, source_attribute = source.rpartition(".")
        source_module = model.get_submodule(source_owner)
        owner = model.get_submodule(owner_name)
        param = source_module._parameters.get(source_attribute)
        if param is not None and attribute in owner._parameters:
            owner._parameters[attribute] = param
        buffer = source_module._buffers.get(source_attribute)  # slimkit's tied int8 tables are buffers
        if buffer is not None and attribute in owner._buffers:
            owner._buffers[attribute] = buffer


def missing(module: nn.Module, prefix: str) -> list[str]:
    """The keys (``prefix`` + name) of ``module``'s meta tensors: what a fill must provide."""
    return [prefix + name for name, _, _, tensor in stored_entries(module) if tensor.is_meta]
