"""Pruning on SmolLM2-135M: slimkit's methods side by side with llm-compressor, in one process.

Same model (the GGUF's weights in fp32), same calibration windows (WikiText-2 *valid*, the
word-level split with ``<unk>`` that ../shared/assets has, disjoint from test; ``--calib-samples``
x ``--calib-len`` tokens drawn with ``--seed``), same evaluator (slimkit's perplexity on the first
``--eval-windows`` x ``--eval-len`` windows of WikiText-2 raw *test*).
Every method starts from a fresh copy of the dense model, loaded from an fp32 copy saved once.

Peers (llm-compressor 0.14.0.1, ``oneshot`` with a DataLoader of the same windows, its layers
as sequential targets and ``lm_head`` untouched):
- Wanda and SparseGPT, unstructured 50% and 2:4: ``WandaPruningModifier``/``SparseGPTModifier``
  (their defaults: block size 128, dampening 0.01, as slimkit's).
- magnitude 50%: llm-compressor's ``MagnitudePruningModifier`` only acts on training-loop events
  (under ``oneshot`` it leaves every weight as it was), so the peer is its ``unstructured`` mask
  creator applied to ``|W|`` of every block projection, the same per-layer rule.
- magnitude 2:4 and the structured FFN pruners: llm-compressor has no counterpart (its mask
  factory has no N:M structure; REAP prunes MoE experts only).

slimkit's step runs through the calls ``run_recipe`` makes (the compressor's ``compress_`` with
the host's context); the recipe form of each row is ``{"steps": [Method.step], "calibration": ...}``.
Columns: time is the compression step alone (calibration windows are drawn beforehand for both);
"+RSS" is the step's peak resident memory above what the process held when it started (the
model included), against a budget of one fp32 block plus the calibration states (the hidden
states going into and out of one block, and the float64 Hessians of one block's distinct inputs).
Decode speed of the shrunk models (greedy, 1 thread, prompt 128, 64 new tokens, median of 5)
is measured right after the dense model's, alternately, with the load average.

``--precision bfloat16`` runs slimkit's calibration passes under bfloat16 autocast (the
recipe's ``calibration: {precision: bfloat16}``), as the reference GPU implementations run in
half precision; the weights are still changed in fp32, and the peer still runs the fp32 model.

Install the peer in a separate environment (its pins conflict with transformers 5.23, but it runs):
  python -m venv .venv-bench && .venv-bench/bin/pip install torch==2.13.0 && \
  .venv-bench/bin/pip install -e '.[gguf]' loguru datasets && \
  .venv-bench/bin/pip install --no-deps llmcompressor==0.14.0.1 compressed-tensors==0.19.0
Usage: .venv-bench/bin/python bench/pruning.py [--only wanda-50,sparsegpt-2:4] [--no-peer]
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

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402

from slimkit.core.memory import release_free_memory  # noqa: E402

ASSETS = Path(__file__).resolve().parents[2] / "shared" / "assets"


def smol_inputs(assets: Path) -> tuple[Path, Path, Path] | None:
    """``(gguf, wikitext valid, wikitext raw test)`` under ``assets``, or ``None`` (said on stderr)
    when one is missing: the benchmarks' shared inputs."""
    paths = (assets / "smollm2-135m-instruct-q4_1" / "SmolLM2-135M-Instruct.Q4_1.gguf",
             assets / "wikitext-2" / "wikitext-2-valid.tokens.txt",
             assets / "wikitext-2" / "wikitext-2-raw-test.txt")
    for path in paths:
        if not path.is_file():
            print(f"needs {path} (../shared/assets)", file=sys.stderr)
            return None
    return paths


def add_data_options(parser: argparse.ArgumentParser, peer_precision: str) -> None:
    """The options the SmolLM2 peer benchmarks share: assets, calibration windows and precision,
    evaluation windows (``peer_precision`` says how the peers run, for --precision's help)."""
    parser.add_argument("--assets", type=Path, default=ASSETS)
    parser.add_argument("--calib-samples", type=int, default=64)
    parser.add_argument("--calib-len", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                        help=f"slimkit's calibration passes ({peer_precision})")
    parser.add_argument("--eval-windows", type=int, default=40)
    parser.add_argument("--eval-len", type=int, default=512)


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class Method:
    key: str
    sparsity: str
    step: dict[str, Any]
    peer: str | None = None  # "wanda", "sparsegpt", "magnitude" or None
    mask: str = "0:0"
    structured: bool = False


METHODS = [
    Method("magnitude-50", "50%", {"method": "prune.unstructured", "params": {"sparsity": 0.5, "scope": "layer"}},
           "magnitude"),
    Method("magnitude-2:4", "2:4", {"method": "prune.nm", "params": {"n": 2, "m": 4}}),
    Method("wanda-50", "50%", {"method": "prune.unstructured",
                               "params": {"sparsity": 0.5, "scorer": "wanda", "scope": "row"}}, "wanda"),
    Method("wanda-2:4", "2:4", {"method": "prune.nm", "params": {"n": 2, "m": 4, "scorer": "wanda"}},
           "wanda", "2:4"),
    Method("sparsegpt-50", "50%", {"method": "prune.sparsegpt", "params": {"sparsity": 0.5}}, "sparsegpt"),
    Method("sparsegpt-2:4", "2:4", {"method": "prune.sparsegpt", "params": {"n": 2, "m": 4}},
           "sparsegpt", "2:4"),
    *[Method(f"ffn20-{label}", "20% FFN", {"method": "prune.neurons", "params": {"fraction": 0.2, **params}},
             structured=True)
      for label, params in [
          ("magnitude", {"scorer": "neurons.magnitude"}),
          ("l2-activation", {"scorer": "neurons.activation"}),
          ("taylor", {"scorer": "neurons.taylor"}),
          ("mi", {"scorer": "neurons.mi"}),
          ("mi-fold", {"scorer": "neurons.mi", "fold": True}),
          ("mi-residual-fold", {"scorer": "neurons.mi", "fold": True, "scorer_params": {"criterion": "residual"}}),
      ]],
]


@dataclass
class Row:
    method: Method
    ppl: float = float("nan")
    seconds: float = float("nan")
    extra_rss: int = 0
    peer_ppl: float | None = None
    peer_seconds: float | None = None
    peer_extra_rss: int | None = None
    decode: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


def fresh(folder: Path):
    """A new copy of the dense model with every weight resident: safetensors loads are memory-
    mapped, and first touching the weights inside a method would count them in its +RSS."""
    from slimkit import load_model

    gc.collect()
    model = load_model(folder)
    with torch.no_grad():
        for p in model.model.parameters():
            p.data = p.data.clone()
    return model


def run_ours(host, method: Method, model, calibration) -> tuple[float, int, dict[str, Any]]:
    """The step as ``run_recipe`` runs it (same calls), timed and measured around the method alone."""
    from slimkit.core.memory import peak_rss_bytes, reset_peak

    info = host.compressors.get(method.step["method"])
    config = host.config(info, method.step["params"])
    ctx = host.context(calibration=calibration, seed=0)
    adapter = host.adapter_for(model)
    gc.collect()
    release_free_memory()
    before = rss_bytes()
    reset_peak()
    started = time.perf_counter()
    summary = info.create().compress_(model, adapter, config, ctx)
    seconds = time.perf_counter() - started
    details = {k: v for k, v in summary.details.items() if k != "per_layer"}
    return seconds, max(0, peak_rss_bytes() - before), details


def peer_magnitude(module: torch.nn.Module, sparsity: float) -> None:
    """llm-compressor's unstructured mask creator on |W| of every block projection."""
    from llmcompressor.modifiers.pruning.utils.pytorch import PruningMaskCreatorArgs, PruningMaskFactory

    create = PruningMaskFactory.create_mask_creator("unstructured")
    with torch.no_grad():
        for name, sub in module.named_modules():
            if isinstance(sub, torch.nn.Linear) and name.startswith("model.layers."):
                mask = create(PruningMaskCreatorArgs(parameter=sub.weight, sparsity=sparsity,
                                                     scores=sub.weight.abs()))
                sub.weight.mul_(mask)


def run_peer(method: Method, model, windows: torch.Tensor) -> tuple[float, int]:
    from slimkit.core.memory import peak_rss_bytes, reset_peak

    gc.collect()
    release_free_memory()
    before = rss_bytes()
    reset_peak()
    started = time.perf_counter()
    if method.peer == "magnitude":
        peer_magnitude(model.model, 0.5)
    else:
        from llmcompressor import oneshot
        from llmcompressor.modifiers.obcq import SparseGPTModifier
        from llmcompressor.modifiers.pruning import WandaPruningModifier

        modifier_cls = {"wanda": WandaPruningModifier, "sparsegpt": SparseGPTModifier}[method.peer or ""]
        modifier = modifier_cls(sparsity=0.5, mask_structure=method.mask, targets=[r"re:model.layers.\d+$"],
                                ignore=[r"re:.*lm_head"])
        rows = [{"input_ids": w.unsqueeze(0), "attention_mask": torch.ones(1, w.numel(), dtype=torch.long)}
                for w in windows]
        loader = torch.utils.data.DataLoader(rows, batch_size=None, shuffle=False)
        oneshot(model=model.model, tokenizer=model.tokenizer, dataset=loader, recipe=modifier,
                num_calibration_samples=len(rows), max_seq_length=windows.shape[1])
    seconds = time.perf_counter() - started
    return seconds, max(0, peak_rss_bytes() - before)


def budget_bytes(model, n: int, length: int) -> tuple[int, dict[str, int]]:
    config = model.model.config
    block = sum(p.numel() for p in model.model.model.layers[0].parameters()) * 4
    hidden_states = 2 * n * length * config.hidden_size * 4
    hessians = (3 * config.hidden_size**2 + config.intermediate_size**2) * 8
    parts = {"block": block, "hidden states in+out": hidden_states, "hessians": hessians}
    return sum(parts.values()), parts


def sparsity_of(module: torch.nn.Module) -> float:
    zeros = total = 0
    for name, sub in module.named_modules():
        if isinstance(sub, torch.nn.Linear) and name.startswith("model.layers."):
            zeros += int((sub.weight == 0).sum())
            total += sub.weight.numel()
    return zeros / total


def decode_pair(host, dense, shrunk, repeats: int) -> dict[str, float]:
    params = {"threads": 1, "prompt_tokens": 128, "new_tokens": 64, "repeats": 1, "warmup": 1}
    dense_speeds, shrunk_speeds = [], []
    for _ in range(repeats):  # alternate so that load changes hit both alike
        dense_speeds.append(host.evaluate("latency", dense, params=params)["decode_tokens_per_s"])
        shrunk_speeds.append(host.evaluate("latency", shrunk, params=params)["decode_tokens_per_s"])
    d, s = statistics.median(dense_speeds), statistics.median(shrunk_speeds)
    return {"dense_tok_s": d, "shrunk_tok_s": s, "speedup": s / d, "load": os.getloadavg()[0]}


def mib(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    add_data_options(parser, "the peer always runs the fp32 model")
    parser.add_argument("--decode-repeats", type=int, default=5)
    parser.add_argument("--only", default=None, help="comma-separated method keys (default: all)")
    parser.add_argument("--no-peer", action="store_true", help="slimkit only")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    inputs = smol_inputs(args.assets)
    if inputs is None:
        return 2
    gguf, valid, test = inputs
    methods = METHODS
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {m.key for m in METHODS}
        if unknown:
            print(f"unknown methods {sorted(unknown)}; known: {[m.key for m in METHODS]}", file=sys.stderr)
            return 2
        methods = [m for m in METHODS if m.key in wanted]
    peer_ok = not args.no_peer
    if peer_ok:
        try:
            import llmcompressor  # noqa: F401
            from loguru import logger

            logger.remove()  # its per-layer METRIC lines would bury the table
        except ImportError as error:
            print(f"llm-compressor is not installed ({error}); slimkit only. See the docstring.", file=sys.stderr)
            peer_ok = False
    torch.set_num_threads(args.threads)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    from slimkit import load_model, make_host, save_model
    from slimkit.core.data import TextSource, calibration_samples

    host = make_host(load_entrypoints=False)
    eval_params = {"text": str(test), "seq_len": args.eval_len, "max_windows": args.eval_windows}
    started_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "smollm2-fp32"
        with contextlib.redirect_stderr(open(os.devnull, "w")):
            save_model(load_model(gguf), folder, {})
        dense = fresh(folder)
        calibration = calibration_samples(dense.tokenizer, TextSource(valid), n_samples=args.calib_samples,
                                          seq_len=args.calib_len, seed=args.seed, precision=args.precision)
        windows = calibration.input_ids
        budget, parts = budget_bytes(dense, args.calib_samples, args.calib_len)
        dense_ppl = host.evaluate("perplexity", dense, params=eval_params)["perplexity"]
        print(f"dense ppl {dense_ppl:.3f}; budget {mib(budget)} MiB "
              + ", ".join(f"{k} {mib(v)}" for k, v in parts.items()), flush=True)
        del dense
        rows: list[Row] = []
        for method in methods:
            row = Row(method)
            model = fresh(folder)
            row.seconds, row.extra_rss, row.details = run_ours(host, method, model, calibration)
            row.ppl = host.evaluate("perplexity", model, params=eval_params)["perplexity"]
            if method.structured:
                dense = fresh(folder)
                row.decode = decode_pair(host, dense, model, args.decode_repeats)
                row.details["parameters"] = sum(p.numel() for p in model.model.parameters())
                del dense
            else:
                row.details["sparsity"] = sparsity_of(model.model)
            del model
            if peer_ok and method.peer:
                model = fresh(folder)
                row.peer_seconds, row.peer_extra_rss = run_peer(method, model, windows)
                row.peer_ppl = host.evaluate("perplexity", model, params=eval_params)["perplexity"]
                row.details["peer_sparsity"] = sparsity_of(model.model)
                del model
            rows.append(row)
            print(f"  {method.key}: ppl {row.ppl:.3f} ({row.seconds:.1f} s, +{mib(row.extra_rss)} MiB)"
                  + (f"; peer {row.peer_ppl:.3f} ({row.peer_seconds:.1f} s, +{mib(row.peer_extra_rss)} MiB)"
                     if row.peer_ppl is not None else ""), flush=True)

    load = os.getloadavg()
    print()
    print(f"SmolLM2-135M (GGUF Q4_1 -> fp32), {args.threads} threads; calibration WikiText-2 valid (tokens) "
          f"{args.calib_samples}x{args.calib_len} seed {args.seed}, slimkit in {args.precision}; ppl WikiText-2 test first "
          f"{args.eval_windows}x{args.eval_len}; dense ppl {dense_ppl:.3f}; +RSS budget {mib(budget)} MiB")
    header = (f"{'method':<20}{'sparsity':>9}{'ppl':>9}{'time s':>8}{'+RSS MiB':>9}{'peer ppl':>10}"
              f"{'peer s':>8}{'peer +RSS':>10}{'ppl ratio':>10}{'time ratio':>11}{'decode x':>9}")
    print(header)
    print("-" * len(header))
    for row in rows:
        ppl_ratio = row.ppl / row.peer_ppl if row.peer_ppl else None
        time_ratio = row.seconds / row.peer_seconds if row.peer_seconds else None
        print(f"{row.method.key:<20}{row.method.sparsity:>9}{row.ppl:>9.3f}{row.seconds:>8.1f}"
              f"{mib(row.extra_rss):>9}{num(row.peer_ppl, '.3f'):>10}{num(row.peer_seconds, '.1f'):>8}"
              f"{mib(row.peer_extra_rss):>10}{num(ppl_ratio, '.3f'):>10}{num(time_ratio, '.2f'):>11}"
              f"{num(row.decode.get('speedup'), '.3f'):>9}")
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; total {time.perf_counter() - started_all:.0f} s")
    for row in rows:
        if row.decode:
            d = row.decode
            print(f"  decode {row.method.key}: dense {d['dense_tok_s']:.1f} tok/s, shrunk {d['shrunk_tok_s']:.1f} "
                  f"tok/s ({row.details.get('parameters', 0):,} params), load {d['load']:.2f}")

    failures = []
    for row in rows:
        if row.peer_ppl is not None and row.ppl > row.peer_ppl * 1.001:
            failures.append(f"{row.method.key}: ppl {row.ppl:.3f} > peer {row.peer_ppl:.3f}")
        if row.peer_seconds and row.method.peer != "magnitude" and row.seconds > 0.5 * row.peer_seconds:
            failures.append(f"{row.method.key}: time {row.seconds:.1f} s > half of peer {row.peer_seconds:.1f} s")
        if row.extra_rss > budget:
            failures.append(f"{row.method.key}: +RSS {mib(row.extra_rss)} MiB > budget {mib(budget)} MiB")
    by_key = {row.method.key: row for row in rows}
    if "ffn20-mi" in by_key and "ffn20-magnitude" in by_key:
        if by_key["ffn20-mi"].ppl >= by_key["ffn20-magnitude"].ppl:
            failures.append("MI-structured is not better than magnitude-structured")
    print("targets: " + ("all met" if not failures else "MISSED: " + "; ".join(failures)))
    if args.json:
        args.json.write_text(json.dumps({
            "args": {k: str(v) for k, v in vars(args).items()}, "dense_ppl": dense_ppl, "budget": budget,
            "load": load, "rows": [{"method": r.method.key, "sparsity": r.method.sparsity, "ppl": r.ppl,
                                    "seconds": r.seconds, "extra_rss": r.extra_rss, "peer_ppl": r.peer_ppl,
                                    "peer_seconds": r.peer_seconds, "peer_extra_rss": r.peer_extra_rss,
                                    "decode": r.decode, "details": r.details} for r in rows]},
            indent=2, default=str))
    return 0 if not failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
