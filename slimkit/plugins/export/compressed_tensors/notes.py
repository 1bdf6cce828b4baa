"""How each runtime loads an export, as measured (transformers 5.25 + compressed-tensors 0.20.1) or
as vLLM's code and documentation state it (vLLM does not run on this project's machines): the
summary's ``loading`` details, so a user sees the path that works before trying one that fails."""

from __future__ import annotations

from slimkit.plugins.export.compressed_tensors.plan import ExportPlan
from slimkit.plugins.export.compressed_tensors.sparsity import Sparsity

#: Group sizes vLLM's Marlin kernels take (per channel too); other kernels may take others.
MARLIN_GROUPS = (32, 64, 128)
DEQUANTIZE_PATH = ("AutoModelForCausalLM.from_pretrained(path, quantization_config="
                   "transformers.CompressedTensorsConfig(dequantize=True))")


def loading_notes(plan: ExportPlan, zero_point_layout: str, sparsity: Sparsity | None = None) -> dict[str, str]:
    schemes = list(plan.schemes)
    asymmetric = [s for s in schemes if not s.symmetric]
    if not schemes:
        transformers = "AutoModelForCausalLM.from_pretrained(path) (a float folder)"
    elif asymmetric and zero_point_layout == "packed":
        transformers = (f"{DEQUANTIZE_PATH}; plain from_pretrained fails in transformers 5.25 + compressed-tensors "
                        "0.20.1 on the packed zero points' shape")
    else:
        transformers = "AutoModelForCausalLM.from_pretrained(path) with compressed-tensors installed"
    vllm = []
    if any(s.bits not in (4, 8) for s in schemes):
        vllm.append("vLLM's long-standing WNA16 kernels take 4 and 8 bits; other widths (symmetric) only in its "
                    "2026 code")
    if any(s.bits not in (4, 8) for s in asymmetric):
        vllm.append("asymmetric grids need 4 or 8 bits")
    if zero_point_layout == "transformers" and asymmetric:
        vllm.append("zero_point_layout=transformers is not the layout vLLM reads: export with the default")
    if any(s.group_size not in (None, *MARLIN_GROUPS) for s in schemes if s.activations is None):
        vllm.append(f"Marlin kernels take group sizes {', '.join(map(str, MARLIN_GROUPS))} or per channel")
    if any(s.activations == "int8" for s in schemes):
        vllm.append("W8A8 int8 runs on NVIDIA compute capability 7.5 to 9.x (not Blackwell)")
    weight_only = {name for name, (module, _) in plan.quantized.items() if module.activations is None}
    if sparsity is not None and sparsity.structure == "2:4" and set(sparsity.layers) - weight_only:
        vllm.append("layers stated 2:4 that are float or W8A8 go to vLLM's 2:4 kernels (Hopper; removed in 2026 "
                    "releases, which then refuse the model)")
    return {"transformers": transformers,
            "vllm": "; ".join(vllm) if vllm else "loads as an llm-compressor checkpoint (not checked here)"}
