"""Round-to-nearest weight quantization (RTN): every weight to the nearest point of its group's
grid, no data. The baseline every other quantizer is measured against, and at 8 bits nearly
lossless."""

from __future__ import annotations

from slimkit import BaseCompressor, fp16_exact, grid_params, hookimpl, quantize_weight
from slimkit.plugins.quantization.common import (
    WeightQuantConfig,
    finish,
    replace_with_codes,
    target_layers,
)


class RTNConfig(WeightQuantConfig):
    pass


class RTNQuantizer(BaseCompressor):
    """Quantize weights to the nearest grid point (no calibration data)."""

    name = "quantize.rtn"
    version = 1
    Config = RTNConfig

    def check(self, model, adapter, config, ctx):
        target_layers(model, adapter, config, self.name)

    def stream_refusal(self, config, ctx):
        return None  # block by block (ctx.blocks)

    def compress_(self, model, adapter, config, ctx):
        layout, refs = target_layers(model, adapter, config, self.name)
        chosen = {ref.name for ref in refs}
        grid = config.grid()
        done = 0
        for block in ctx.blocks(model, adapter):
            for ref in block.linears():
                if ref.name not in chosen:
                    continue
                weight = ref.weight_out_in().detach()
                scale, zero = grid_params(weight, grid)
                scale = fp16_exact(scale)
                replace_with_codes(model.model, ref, quantize_weight(weight, scale, zero, grid), scale, zero, grid)
                done += 1
                ctx.report("layers", done, len(refs), ref.name)
        return finish(model, layout, refs, config, "round-to-nearest")


@hookimpl
def register_compressors(register):
    register(RTNQuantizer)
