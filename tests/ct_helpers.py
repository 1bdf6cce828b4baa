"""Shared by the compressed-tensors exporter tests: a host with the exporter, tiny models, and
loading an export the way a user of plain transformers does."""

from __future__ import annotations

from pathlib import Path

import torch

import slimkit
from slimkit import DEFAULT_PLUGINS, LoadedModel, QuantizedLinear, make_host

PLUGIN = "slimkit.plugins.export.compressed_tensors.plugin"
FORMAT = "compressed-tensors"
# more than slimkit's KERNEL_MAX_ROWS (16): slimkit's forward dequantizes the weights, as loaders do
IDS = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(0))


def ct_host():
    """The bundled plugins (the exporter among them), no installed ones."""
    assert PLUGIN in DEFAULT_PLUGINS
    return make_host(load_entrypoints=False)


def tiny_llama(hidden: int = 128, intermediate: int = 256, *, tie: bool = True, seed: int = 0) -> LoadedModel:
    """A random 2-block Llama whose widths take group sizes 32 and 64 (stories260K's 172 do not)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=512,
                         max_position_embeddings=128, tie_word_embeddings=tie)
    return LoadedModel(LlamaForCausalLM(config).eval(), None, "tiny-llama")


def apply(host, model: LoadedModel, method: str, params: dict, calibration=None) -> LoadedModel:
    """Check and run one compressor the way the runner does."""
    info = host.compressors.get(method)
    config = host.config(info, params)
    ctx = host.context(calibration=calibration)
    compressor = info.create()
    adapter = host.adapter_for(model)
    compressor.check(model, adapter, config, ctx)
    compressor.compress_(model, adapter, config, ctx)
    return model


def export(host, model: LoadedModel, out: Path, **params):
    return slimkit.export_model(model, out, format=FORMAT, params=params, host=host)


def logits(module, ids=IDS) -> torch.Tensor:
    with torch.no_grad():
        return module(ids, use_cache=False).logits


def quantized_layers(model: LoadedModel) -> dict[str, QuantizedLinear]:
    return {name: m for name, m in model.model.named_modules()
            if isinstance(m, QuantizedLinear) and name != "lm_head"}


def load_plain(folder: Path, **kwargs):
    """``AutoModelForCausalLM.from_pretrained(folder)``, as a user of transformers would."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, **kwargs)


def load_dequantized(folder: Path):
    """The loading path for asymmetric exports in transformers 5.25 + compressed-tensors 0.20.1."""
    import warnings

    from transformers import CompressedTensorsConfig

    with warnings.catch_warnings():  # "the quantization_config from the model will be used" (only dequantize=True is)
        warnings.filterwarnings("ignore", message="You passed `quantization_config`")
        return load_plain(folder, quantization_config=CompressedTensorsConfig(dequantize=True))
