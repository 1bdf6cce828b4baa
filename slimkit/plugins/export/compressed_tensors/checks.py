"""Every reason a model cannot go out as compressed-tensors, one line each, found before anything
is written: what transformers could not load, or could load only wrongly."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from slimkit import QuantizedEmbedding, QuantizedLinear
from slimkit.plugins.export.compressed_tensors.plan import ExportPlan

#: Bit widths ``pack-quantized`` holds in every compressed-tensors release that reads it.
STABLE_BITS = (2, 4, 8)


def _first(names: list[str]) -> str:
    return names[0] + (f" (and {len(names) - 1} more)" if len(names) > 1 else "")


def problems(model: Any, plan: ExportPlan, *, dense_3bit: bool) -> list[str]:
    import transformers

    found: list[str] = []
    cls = type(model)
    if getattr(transformers, cls.__name__, None) is not cls:
        found.append(f"{cls.__module__}.{cls.__name__} is not a transformers model class: a compressed-tensors "
                     "folder loads through transformers (or vLLM), which would not know it; save it with slimkit")
    if plan.low_rank:
        found.append(f"{_first(plan.low_rank)} is low-rank (two factors): compressed-tensors has no factorised "
                     "layers; run the 'densify' step first (a float layer, which then exports, or quantize it again)")
    odd = [name for name, (_, s) in plan.quantized.items() if s.bits not in STABLE_BITS]
    if odd and not dense_3bit:
        bits = plan.quantized[odd[0]][1].bits
        found.append(f"{_first(odd)} is int{bits}: compressed-tensors packs {bits}-bit codes densely only since "
                     "0.18 (0.17 and earlier read such a file wrong, without an error), and vLLM's released kernels "
                     "take 4 and 8 bits; pass dense_3bit=true for loaders with compressed-tensors >= 0.18, or "
                     "quantize to 4 bits, or export to gguf")
    if found:
        return found  # the layout comparison below assumes layers it can map
    return _layout_problems(model, plan)


def _logical_shapes(model: Any, plan: ExportPlan) -> dict[str, tuple[int, ...]]:
    """The float ``state_dict`` shapes the export stands for (quantized layers as float weights)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for key, value in model.state_dict().items():
        owner = plan.owner(key)
        if owner is None:
            shapes[key] = tuple(value.shape)
            continue
        module = plan.quantized[owner][0] if owner in plan.quantized else plan.dequantized[owner]
        if isinstance(module, QuantizedEmbedding):
            shapes[f"{owner}.weight"] = (module.num_embeddings, module.embedding_dim)
        elif isinstance(module, QuantizedLinear):
            shapes[f"{owner}.weight"] = (module.out_features, module.in_features)
            if module.bias is not None:
                shapes[f"{owner}.bias"] = (module.out_features,)
    return shapes


def _layout_problems(model: Any, plan: ExportPlan) -> list[str]:
    """Does transformers build, from this config, the very layers the export holds? (Per-layer
    widths a config cannot state, or a layer slimkit replaced where the class has no nn.Linear.)"""
    try:
        with torch.device("meta"):
            skeleton = type(model)._from_config(copy.deepcopy(model.config))
    except Exception as error:  # a config the class cannot build from
        return [f"transformers cannot build {type(model).__name__} from this model's config "
                f"({str(error).splitlines()[0] if str(error) else type(error).__name__}); save it with slimkit"]
    found = []
    not_linear = [name for name in plan.quantized
                  if not isinstance(_submodule(skeleton, name), nn.Linear)]
    if not_linear:
        kind = type(_submodule(skeleton, not_linear[0])).__name__
        found.append(f"{_first(not_linear)} is a {kind} in {type(model).__name__}, not an nn.Linear: "
                     "compressed-tensors quantizes nn.Linear layers only; dequantize the model first (its float "
                     "export then loads) or export to gguf")
    expected = {key: tuple(value.shape) for key, value in skeleton.state_dict().items()}
    ours = _logical_shapes(model, plan)
    reported = tuple(f"{name}." for name in not_linear)  # a Conv1D's [in, out] weight: said above
    wrong = sorted(key for key in ours.keys() & expected.keys()
                   if ours[key] != expected[key] and not key.startswith(reported))
    missing = sorted(expected.keys() - ours.keys())
    extra = sorted(ours.keys() - expected.keys())
    if wrong:
        key = wrong[0]
        found.append(f"{_first(wrong)} is {'x'.join(map(str, ours[key]))} here but "
                     f"{'x'.join(map(str, expected[key]))} in the {type(model).__name__} its config describes "
                     "(per-layer widths a transformers config cannot state?): transformers could not load the "
                     "export; keep slimkit's own format, or export to gguf")
    if missing:
        found.append(f"the model has no {_first(missing)}, which {type(model).__name__} built from its config has: "
                     "the tensors do not fit the config; keep slimkit's own format")
    if extra:
        found.append(f"the model has {_first(extra)}, which {type(model).__name__} built from its config has not: "
                     "the tensors do not fit the config; keep slimkit's own format")
    return found


def _submodule(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None
