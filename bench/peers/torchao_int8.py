"""torchao 0.18.0 on CPU: Int8WeightOnlyConfig and Int8DynamicActivationInt8WeightConfig.
usage: python torchao_int8.py            # stories260K: weight / logits differences
       python torchao_int8.py speed [N]  # SmolLM2-135M fp32 vs int8 greedy decode tok/s, 1 thread
       python torchao_int8.py speed 3 bf16 # same with the model (and activations) in bfloat16
       python torchao_int8.py speed-compile  # same under torch.compile (slow to compile)"""
import copy, os, sys, time
os.environ.setdefault("TORCHAO_FORCE_SKIP_LOADING_SO_FILES", "1")  # the PyPI wheel's .so are CUDA-only
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from torchao.quantization import quantize_, Int8WeightOnlyConfig, Int8DynamicActivationInt8WeightConfig
from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig

STORIES = "/work/main/slimkit/examples/stories260K"
TEXT = "/work/main/slimkit/examples/tinystories/tinystories-valid-head.txt"
SMOL_FP32 = "/tmp/exp/smollm2-fp32"
SMOL_GGUF = "/work/shared/assets/smollm2-135m-instruct-q4_1"

CONFIGS = {
    "int8wo": lambda: Int8WeightOnlyConfig(),                        # per-row symmetric int8 weights
    "int8dyn": lambda: Int8DynamicActivationInt8WeightConfig(),      # + per-token dynamic int8 activations
    # bonus: W4A16 CPU path (asymmetric int4, tinygemm layout, aten._weight_int4pack_mm_for_cpu);
    # layers whose in_features % group_size != 0 are silently left dense
    "int4wo-g64": lambda: PrototypeInt4WeightOnlyConfig(group_size=64),
}
is_linear_not_head = lambda m, fqn: isinstance(m, torch.nn.Linear) and "lm_head" not in fqn


def quantized(model, name):
    q = copy.deepcopy(model)
    # filter_fn: default quantizes every nn.Linear, lm_head included (stories260K ties lm_head to the
    # embedding: quantizing it would also swap the tied embedding weight) -> exclude it explicitly
    filt = is_linear_not_head
    if name.startswith("int4"):   # _convert_weight_to_int4pack_for_cpu needs out_features % 16 == 0
        filt = lambda m, fqn: is_linear_not_head(m, fqn) and m.out_features % 16 == 0
    quantize_(q, CONFIGS[name](), filter_fn=filt)
    return q


def api_check():
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(STORIES)
    model = AutoModelForCausalLM.from_pretrained(STORIES, dtype=torch.float32).eval()
    ids = tok(open(TEXT).read()[:20000], return_tensors="pt").input_ids[0][:4 * 128].view(4, 128)
    with torch.no_grad():
        ld = model(ids).logits
        for name in CONFIGS:
            q = quantized(model, name)
            lin = q.model.layers[0].self_attn.q_proj
            W = lin.weight                                  # tensor subclass (Int8Tensor / Int4OpaqueTensor)
            W0 = model.model.layers[0].self_attn.q_proj.weight
            if type(W).__name__ == "Int8Tensor":            # W.dequantize(): effective weight, float32
                Wd = W.dequantize()
                print(f"[{name}] weight type {type(W).__name__} qdata {tuple(W.qdata.shape)} {W.qdata.dtype}"
                      f" scale {tuple(W.scale.shape)} block {W.block_size} act_quant={W.act_quant_kwargs is not None}"
                      f"  (scale max/2 = {float(W.scale.max()) / 2:.3e})")
            else:                                           # Int4OpaqueTensor (packed): probe with identity
                Wd = torch.nn.functional.linear(torch.eye(W0.shape[1]), W).T
                print(f"[{name}] weight type {type(W).__name__} packed {tuple(W.qdata.shape)} block {W.block_size}")
            print(f"[{name}] max|Wdq - W0| q_proj = {float((Wd - W0).abs().max()):.3e}")
            lq = q(ids).logits
            ppl = lambda m: float(m(ids, labels=ids).loss.exp())
            print(f"[{name}] max|logits diff| = {float((lq - ld).abs().max()):.3e}  ppl dense {ppl(model):.4f} q {ppl(q):.4f}")


def load_smol():
    if os.path.isdir(SMOL_FP32):
        return AutoModelForCausalLM.from_pretrained(SMOL_FP32, dtype=torch.float32).eval()
    return AutoModelForCausalLM.from_pretrained(SMOL_GGUF, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
                                                dtype=torch.float32).eval()


@torch.no_grad()
def decode_tps(model, n_new=32, prompt_len=16):
    ids = torch.arange(10, 10 + prompt_len).unsqueeze(0)
    out = model(ids, use_cache=True)
    past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
    t = time.perf_counter()
    for _ in range(n_new):                                        # greedy decode, batch 1, KV cache
        out = model(nxt, past_key_values=past, use_cache=True)
        past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
    return n_new / (time.perf_counter() - t)


def speed(reps=3, compile_=False, dtype=torch.float32):
    torch.set_num_threads(1)
    fp32 = load_smol()
    base = fp32 if dtype == torch.float32 else copy.deepcopy(fp32).to(dtype)
    models = {"dense-fp32": fp32, **({} if dtype == torch.float32 else {"dense-bf16": base}),
              **{n: quantized(base, n) for n in CONFIGS}}
    if compile_:
        for m in models.values():
            m.forward = torch.compile(m.forward, dynamic=True)
    for m in models.values():
        decode_tps(m, 4)                                            # warm-up (and compile)
    res = {n: [] for n in models}
    for _ in range(reps):                                           # interleave: the machine is shared
        for n, m in models.items():
            res[n].append(decode_tps(m))
    for n, v in res.items():
        print(f"{n:10s} act {str(next(models[n].parameters()).dtype)[6:]:8s} decode tok/s (1 thread, 32 new): "
              + " ".join(f"{x:.1f}" for x in v) + f"  best {max(v):.1f}  vs fp32 {max(v) / max(res['dense-fp32']):.2f}x")


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "api"
    if mode == "api":
        api_check()
    else:
        speed(int(sys.argv[2]) if len(sys.argv) > 2 else 3, compile_=(mode == "speed-compile"),
              dtype=torch.bfloat16 if "bf16" in sys.argv else torch.float32)
