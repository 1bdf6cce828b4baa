"""llm-compressor 0.14.0.1: GPTQ / RTN W4A16 (sym, group 128) on stories260K, CPU.
usage: python llmcompressor_w4a16.py [gptq|rtn] [group_size]"""
import copy, os, sys, time, torch
os.environ.setdefault("LLM_COMPRESSOR_LOG_LEVEL", "WARNING")  # quiet per-module INFO logs
os.environ.setdefault("TORCHAO_FORCE_SKIP_LOADING_SO_FILES", "1")  # transformers imports torchao if installed
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer

torch.set_num_threads(2)
torch.manual_seed(0)
MODEL = "/work/main/slimkit/examples/stories260K"
TEXT = "/work/main/slimkit/examples/tinystories/tinystories-valid-head.txt"
which = sys.argv[1] if len(sys.argv) > 1 else "gptq"
gs = int(sys.argv[2]) if len(sys.argv) > 2 else 32

tok = AutoTokenizer.from_pretrained(MODEL)
model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
dense = copy.deepcopy(model)

ids = tok(open(TEXT).read()[:200_000], return_tensors="pt").input_ids[0]
SEQ, N = 128, 32
rows = [{"input_ids": ids[i * SEQ:(i + 1) * SEQ].unsqueeze(0),
         "attention_mask": torch.ones(1, SEQ, dtype=torch.long)} for i in range(N)]
dl = DataLoader(rows, batch_size=None, shuffle=False)   # batch_size=None: yields the dicts as-is
test = ids[N * SEQ:N * SEQ + 4 * SEQ].view(4, SEQ)

from llmcompressor import oneshot
from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
from compressed_tensors.quantization import (QuantizationArgs, QuantizationScheme,
                                             QuantizationStrategy, QuantizationType)

# custom scheme so group_size can be changed; scheme="W4A16" is the same with group_size=128
wargs = QuantizationArgs(num_bits=4, type=QuantizationType.INT, symmetric=True,
                         strategy=QuantizationStrategy.GROUP, group_size=gs)
# GROUP strategy needs in_features % group_size == 0 (and in_features >= group_size: a 64-column
# layer at gs=128 dies in the observer's unflatten). stories260K has in_features 64 and 172, so
# gs=128 is impossible there; layers that don't divide are left dense (ignored) here.
IGNORE = ["lm_head"] + [n for n, m in model.named_modules()
                        if isinstance(m, torch.nn.Linear) and n != "lm_head" and m.in_features % gs]
print("left dense:", IGNORE)
cfg = {"group_0": QuantizationScheme(targets=["Linear"], weights=wargs)}
if which == "gptq":
    recipe = GPTQModifier(config_groups=cfg, ignore=IGNORE, block_size=128, dampening_frac=0.01,
                          actorder=None)   # default actorder is "static"
else:
    recipe = QuantizationModifier(config_groups=cfg, ignore=IGNORE)

t = time.perf_counter()
oneshot(model=model, dataset=dl, recipe=recipe, num_calibration_samples=N, max_seq_length=SEQ)
print(f"{which} gs={gs} oneshot {time.perf_counter() - t:.1f}s")

lin = model.model.layers[0].self_attn.q_proj
print("q_proj attrs:", sorted(n for n, _ in lin.named_parameters()), sorted(n for n, _ in lin.named_buffers()),
      "scheme:", getattr(lin, "quantization_scheme", None) is not None,
      "status:", getattr(lin, "quantization_status", None))

# effective (fake-quantized) weight: quantize->dequantize weight with the module's stored scale/zero_point
from compressed_tensors.quantization.lifecycle.forward import forward_quantize
def effective_weight(m):
    # quantize->dequantize of m.weight with the stored weight_scale / weight_zero_point
    # (exactly what the wrapped forward does on every call)
    return forward_quantize(m, m.weight, "weight", m.quantization_scheme.weights)

with torch.no_grad():
    W0 = dense.model.layers[0].self_attn.q_proj.weight
    Wq = effective_weight(lin)
    print("weight stored == original?", torch.equal(lin.weight, W0),
          "| stored already on the grid (max|W - QDQ(W)|):", float((lin.weight - Wq).abs().max()))
    print("max|Wq - W0| q_proj:", float((Wq - W0).abs().max()),
          "scale max", float(lin.weight_scale.abs().max()))
    # distinct levels per group (should be <= 16)
    g = (Wq / lin.weight_scale.repeat_interleave(min(gs, W0.shape[1]), 1)[:, :W0.shape[1]]).round()
    print("int range", int(g.min()), int(g.max()), "scale", tuple(lin.weight_scale.shape), lin.weight_scale.dtype,
          "zp", tuple(lin.weight_zero_point.shape) if hasattr(lin, "weight_zero_point") else None)
    ld = dense(test).logits
    lq = model(test).logits
    print("max|logits_q - logits_dense|:", float((lq - ld).abs().max()))

    def ppl(m):
        out = m(test, labels=test)
        return float(out.loss.exp())
    print("ppl dense %.3f  quant %.3f" % (ppl(dense), ppl(model)))

    # materialise: write the dequantized weights into the modules, then switch the per-call QDQ off
    # (compressed_tensors' wrapped forward re-quantizes every weight on every call: slow and pointless
    # for perplexity). GPTQ already leaves module.weight on the grid, RTN leaves the original weight.
    t = time.perf_counter(); model(test); t_qdq = time.perf_counter() - t
    from compressed_tensors.quantization import disable_quantization
    for m in model.modules():
        if getattr(m, "quantization_scheme", None) is not None and hasattr(m, "weight_scale"):
            m.weight.data.copy_(effective_weight(m))
    model.apply(disable_quantization)      # sets module.quantization_enabled = False
    t = time.perf_counter(); lm = model(test).logits; t_plain = time.perf_counter() - t
    print(f"max|logits_materialised - logits_q|: {float((lm - lq).abs().max()):.2e}"
          f"   forward {t_qdq:.3f}s with QDQ, {t_plain:.3f}s materialised")
