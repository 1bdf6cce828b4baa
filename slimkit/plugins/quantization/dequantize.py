"""Export a float copy of a quantized model, as a recorded step: the result holds exactly the
values the integer codes stand for and saves as an ordinary folder that plain ``transformers``
loads (the quantized folder itself is refused by ``transformers``, by design)."""

from __future__ import annotations

from slimkit import ArchitectureError, BaseCompressor, CompressionSummary, hookimpl, quantized_modules, to_dense


class Dequantizer(BaseCompressor):
    """Replace quantized layers by float layers holding their dequantized weights."""

    name = "dequantize"
    version = 1

    # No check(): recipes check every step against the input model, and a dequantize step
    # usually follows a quantizer in the same recipe.

    def compress_(self, model, adapter, config, ctx):
        count = len(quantized_modules(model.model))
        if not count:
            raise ArchitectureError("dequantize: the model has no quantized layers")
        to_dense(model.model)  # low-rank layers (if any) become dense too: the folder loads in transformers
        return CompressionSummary(f"dequantized {count} quantized modules to float32", {"modules": count})


@hookimpl
def register_compressors(register):
    register(Dequantizer)
