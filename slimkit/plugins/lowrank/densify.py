"""``densify``: a recorded step that turns every layer slimkit replaced back into an ordinary
float layer (low-rank products multiplied out, quantized layers dequantized), so the saved folder
loads in plain ``transformers``. The values are exactly those the replaced layers computed with."""

from __future__ import annotations

from slimkit import ArchitectureError, BaseCompressor, CompressionSummary, hookimpl, replaced_modules, to_dense


class Densifier(BaseCompressor):
    """Replace low-rank and quantized layers by dense float layers computing the same function."""

    name = "densify"
    version = 1

    # No check(): recipes check every step against the input model, and densify usually follows
    # the step that factorised or quantized in the same recipe.

    def compress_(self, model, adapter, config, ctx):
        replaced = replaced_modules(model.model)
        if not replaced:
            raise ArchitectureError("densify: the model has no low-rank or quantized layers")
        kinds = sorted({type(module).__name__ for module in replaced.values()})
        to_dense(model.model)
        return CompressionSummary(f"densified {len(replaced)} layers ({', '.join(kinds)}) to float",
                                  {"modules": len(replaced), "kinds": kinds})


@hookimpl
def register_compressors(register):
    register(Densifier)
