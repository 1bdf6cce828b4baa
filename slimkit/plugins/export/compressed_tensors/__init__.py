"""The bundled ``compressed-tensors`` exporter (vLLM, SGLang, transformers): slimkit's integer codes
written as ``pack-quantized`` / ``int-quantized`` tensors without re-rounding.

Modules: :mod:`.plan` (what each layer becomes), :mod:`.tensors` (slimkit's buffers as
compressed-tensors names them), :mod:`.config` (``quantization_config``), :mod:`.sparsity`,
:mod:`.checks` (refusals), :mod:`.notes` (how each runtime loads it), :mod:`.writer` (the folder)
and :mod:`.plugin` (the exporter and its hook).
"""

from slimkit.plugins.export.compressed_tensors.plugin import (
    CompressedTensorsExporter as CompressedTensorsExporter,
    register_exporters as register_exporters,
)
