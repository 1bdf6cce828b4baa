"""Intel Neural Compressor 3.10 (pip neural-compressor-pt), 3.x torch API, weight-only int4 on CPU.
usage: python inc_woq.py [rtn|gptq|awq|all] [group_size]"""
import copy, os, sys, time
os.environ.setdefault("TORCHAO_FORCE_SKIP_LOADING_SO_FILES", "1")  # INC imports torchao; its .so are CUDA-only
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from neural_compressor.torch.quantization import RTNConfig, GPTQConfig, AWQConfig, prepare, convert

torch.set_num_threads(2)
torch.manual_seed(0)
MODEL = "/work/main/slimkit/examples/stories260K"
TEXT = "/work/main/slimkit/examples/tinystories/tinystories-valid-head.txt"
which = sys.argv[1] if len(sys.argv) > 1 else "all"
gs = int(sys.argv[2]) if len(sys.argv) > 2 else 32

tok = AutoTokenizer.from_pretrained(MODEL)
dense = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
ids = tok(open(TEXT).read()[:200_000], return_tensors="pt").input_ids[0]
SEQ, N = 128, 32
calib = [{"input_ids": ids[i * SEQ:(i + 1) * SEQ].unsqueeze(0),
          "attention_mask": torch.ones(1, SEQ, dtype=torch.long)} for i in range(N)]
test = ids[N * SEQ:N * SEQ + 4 * SEQ].view(4, SEQ)


def run_fn(model):                      # calibration: plain forwards; INC hooks capture the inputs
    with torch.no_grad():
        for b in calib:
            model(**b)


cfg_ = dense.config
ABSORB = {"input_layernorm": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
          "post_attention_layernorm": ("mlp.gate_proj", "mlp.up_proj"),
          "mlp.up_proj": "mlp.down_proj"}
if cfg_.num_key_value_heads == cfg_.num_attention_heads:   # v -> o only without GQA (shapes must match)
    ABSORB["self_attn.v_proj"] = "self_attn.o_proj"        # with GQA o_proj gets no AWQ scale (plain clip+RTN)


def configs():
    common = dict(bits=4, use_sym=True, group_size=gs)     # lm_head is skipped by default (quant_lm_head=False)
    return {
        # use_layer_wise defaults to True for RTN (loads layers from model_path); off for an in-memory model
        "rtn": (RTNConfig(**common, use_layer_wise=False), False),
        # block_size default 2048 (columns per lazy-batch block); percdamp 0.01; act_order False
        "gptq": (GPTQConfig(**common, block_size=128, percdamp=0.01, act_order=False), True),
        # AWQ: auto_scale + auto_clip search. INC finds "absorb" layers (norm -> q/k/v, ...) with
        # torch.jit.trace, which fails on transformers 5 ('tuple' object has no attribute
        # 'last_hidden_state'), and then falls back to a MulLinear (runtime x*1/s) per linear.
        # Give the per-block mapping explicitly instead (names relative to model.layers.<i>):
        "awq": (AWQConfig(**common, use_auto_scale=True, use_auto_clip=True,
                          absorb_layer_dict=ABSORB), True),
    }


def effective_weight(m):
    """Dequantized fp32 weight of an INCWeightOnlyLinear (forward caches it as m.weight after 1st call)."""
    return m.recover()


for name, (cfg, needs_calib) in configs().items():
    if which not in ("all", name):
        continue
    model = copy.deepcopy(dense)
    t = time.perf_counter()
    model = prepare(model, cfg, example_inputs=calib[0]["input_ids"]) if name == "awq" else prepare(model, cfg)
    if needs_calib:
        run_fn(model)
    model = convert(model)
    dt = time.perf_counter() - t
    lin = model.model.layers[0].self_attn.q_proj
    down = model.model.layers[0].mlp.down_proj
    W0 = dense.model.layers[0].self_attn.q_proj.weight
    with torch.no_grad():
        Wq = effective_weight(lin)
        if name == "awq":   # q_proj columns were multiplied by s and input_layernorm.weight divided by s
            s_ = dense.model.layers[0].input_layernorm.weight / model.model.layers[0].input_layernorm.weight
            print(f"[awq] q/k/v input scale s: min {float(s_.min()):.3f} max {float(s_.max()):.3f}")
            Wq = Wq / s_                        # back to the original weight space
        up = lin.unpack()                      # int weights / scales / zp (UnpackedWeightOnlyLinearParams dict)
        print(f"[{name} gs={gs}] {dt:.1f}s  module {type(lin).__name__}  int range "
              f"[{int(up['int_weight'].min())},{int(up['int_weight'].max())}] scales {tuple(up['scales'].shape)} "
              f"zp {None if up['zp'] is None else tuple(up['zp'].shape)}  down_proj {type(down).__name__}")
        print(f"[{name}] max|Wq - W0| q_proj = {float((Wq - W0).abs().max()):.4f}   (scale max "
              f"{float(up['scales'].max()):.4f})")
        ld, lq = dense(test).logits, model(test).logits
        ppl = lambda m: float(m(test, labels=test).loss.exp())
        print(f"[{name}] max|logits diff| = {float((lq - ld).abs().max()):.4f}  ppl dense {ppl(dense):.3f}"
              f"  quant {ppl(model):.3f}")
