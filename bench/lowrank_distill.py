"""Low-rank factorisation and distillation recovery on SmolLM2-135M, in one process.

**Low rank.** Every block projection factorised with 20% of their parameters removed (``--ratio``):
plain SVD, activation-scaled SVD (ASVD, alpha 0.5) and whitened SVD (SVD-LLM), all with the same
uniform budget per layer, and SVD-LLM with the budget allocated by measured sensitivity. Same
calibration windows for the data-aware rows (WikiText-2 *valid*, ``--calib-samples`` x
``--calib-len`` tokens, seed 0).

**Distillation.** A compressed model (50% unstructured by Wanda, 20% of the MLP neurons by
activation, and RTN int4 g64, which learns through fake quantization) is distilled from the dense model for at most ``--minutes`` minutes of training
(``time_limit_s``; 2 threads): logit KL at T=2, AdamW lr ``--lr``, batches of ``--batch`` x
``--seq`` tokens of WikiText-2 *valid* (general text; the evaluation is on *test*). Reported:
tokens seen, training wall time, ppl before/after, and the share of the dense-to-compressed
perplexity gap recovered, ``(ppl_pruned - ppl_after) / (ppl_pruned - ppl_dense)``.

Perplexity: slimkit's evaluator on the first ``--eval-windows`` x 512 windows of WikiText-2 raw
*test*. Every row starts from a fresh copy of the fp32 model (the GGUF's weights dequantized once).
No peer: none of the installed libraries ships activation-aware SVD or distillation for CPU.

Usage: .venv/bin/python bench/lowrank_distill.py [--only svd,svd-llm,distill-wanda] [--minutes 15]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from pruning import ASSETS, fresh, mib, rss_bytes, smol_inputs  # noqa: E402

from slimkit.core.memory import peak_rss_bytes, release_free_memory, reset_peak  # noqa: E402

LOWRANK = {
    "svd": ("plain SVD", {"method": "lowrank.svd"}),
    "asvd": ("ASVD (alpha 0.5)", {"method": "lowrank.asvd"}),
    "svd-llm": ("SVD-LLM (whitened)", {"method": "lowrank.svd_llm"}),
    "svd-llm-sens": ("SVD-LLM, sensitivity allocation", {"method": "lowrank.svd_llm",
                                                          "params": {"allocation": "sensitivity"}}),
}
COMPRESSED = {  # row -> (label, compression step, extra distill params)
    "distill-wanda": ("Wanda 50% unstructured", {"method": "prune.unstructured",
                                                  "params": {"sparsity": 0.5, "scorer": "wanda", "scope": "row"}}, {}),
    "distill-ffn20": ("20% MLP neurons (activation)", {"method": "prune.neurons",
                                                        "params": {"fraction": 0.2, "scorer": "neurons.activation"}}, {}),
    "distill-int4": ("RTN int4 g64 (fake quantization)", {"method": "quantize.rtn",
                                                           "params": {"bits": 4, "group_size": 64}},
                     {"keep_zeros": False}),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=Path, default=ASSETS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ratio", type=float, default=0.2, help="fraction of block-projection parameters removed")
    parser.add_argument("--calib-samples", type=int, default=32)
    parser.add_argument("--calib-len", type=int, default=512)
    parser.add_argument("--eval-windows", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=15.0, help="distillation time limit per row")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--only", default=None, help=f"comma-separated rows of {[*LOWRANK, *COMPRESSED]}")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    inputs = smol_inputs(args.assets)
    if inputs is None:
        return 2
    gguf, valid, test = inputs
    wanted = set(args.only.split(",")) if args.only else {*LOWRANK, *COMPRESSED}
    unknown = wanted - {*LOWRANK, *COMPRESSED}
    if unknown:
        print(f"unknown rows {sorted(unknown)}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    import transformers

    from slimkit import Recipe, load_model, make_host, run_recipe, save_model

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    host = make_host(load_entrypoints=False)
    eval_params = {"text": str(test), "seq_len": 512, "max_windows": args.eval_windows}
    calibration = {"text": str(valid), "n_samples": args.calib_samples, "seq_len": args.calib_len, "seed": 0}

    def ppl(model) -> float:
        return host.evaluate("perplexity", model, params=eval_params)["perplexity"]

    def step_run(model, steps: list[dict[str, Any]]) -> tuple[Any, float, int]:
        gc.collect()
        release_free_memory()
        before = rss_bytes()
        reset_peak()
        started = time.perf_counter()
        result = run_recipe(Recipe.from_data({"calibration": calibration, "steps": steps}), model, catalogue=False,
                            inplace=True, host=host)
        return result, time.perf_counter() - started, max(0, peak_rss_bytes() - before)

    rows: list[dict[str, Any]] = []
    print(f"torch {torch.__version__}, {args.threads} threads, load {os.getloadavg()[0]:.2f}; ppl on "
          f"{args.eval_windows}x512 WikiText-2 test windows; calibration {args.calib_samples}x{args.calib_len}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "smollm2-fp32"
        with contextlib.redirect_stderr(open(os.devnull, "w")):
            save_model(load_model(gguf), folder, {})
        dense = fresh(folder)
        dense_ppl = ppl(dense)
        dense_params = sum(p.numel() for n, p in dense.model.named_parameters() if ".layers." in n and p.dim() == 2)
        del dense
        print(f"dense ppl {dense_ppl:.3f}; block projections {dense_params:,} parameters", flush=True)

        for key, (label, step) in LOWRANK.items():
            if key not in wanted:
                continue
            model = fresh(folder)
            params = {"param_ratio": args.ratio, **step.get("params", {})}
            result, seconds, extra = step_run(model, [{"method": step["method"], "params": params}])
            details = result.summaries[0].details
            row = {"row": key, "label": label, "ppl": ppl(model), "seconds": seconds, "extra_rss": extra,
                   "removed": details["removed_fraction"], "factorised": details["factorised"],
                   "relative_error": details["relative_error"]}
            rows.append(row)
            print(f"  {label}: ppl {row['ppl']:.3f}, removed {row['removed']:.1%} of projection parameters, "
                  f"{seconds:.0f} s, +{mib(extra)} MiB", flush=True)
            del model, result

        for key, (label, step, extra_params) in COMPRESSED.items():
            if key not in wanted:
                continue
            model = fresh(folder)
            step_run(model, [step])
            pruned_ppl = ppl(model)
            distill = {"method": "distill", "params": {
                "teacher": str(folder), "text": str(valid), "steps": 1_000_000, "time_limit_s": args.minutes * 60,
                "seq_len": args.seq, "batch_size": args.batch, "lr": args.lr, "temperature": 2.0, **extra_params}}
            result, seconds, extra = step_run(model, [distill])
            details = result.summaries[0].details
            after = ppl(model)
            recovered = (pruned_ppl - after) / (pruned_ppl - dense_ppl) if pruned_ppl > dense_ppl else float("nan")
            row = {"row": key, "label": label, "ppl_pruned": pruned_ppl, "ppl_after": after, "recovered": recovered,
                   "tokens": details["tokens"], "steps": details["steps"], "train_seconds": details["train_seconds"],
                   "seconds": seconds, "extra_rss": extra, "loss_first": details["loss_first"],
                   "loss_last": details["loss_last"]}
            rows.append(row)
            print(f"  {label}: ppl {pruned_ppl:.3f} -> {after:.3f} after {details['steps']} steps, "
                  f"{details['tokens']:,} tokens, {details['train_seconds'] / 60:.1f} min: {recovered:.1%} of the gap "
                  f"recovered; +{mib(extra)} MiB", flush=True)
            del model, result

    print(f"\nload average after {os.getloadavg()[0]:.2f}; dense ppl {dense_ppl:.3f}")
    print("| low rank (-{:.0%} projection params) | ppl | removed | rel. error (method's space) | s | +RSS MiB |"
          .format(args.ratio))
    print("|---|---|---|---|---|---|")
    for row in rows:
        if "removed" in row:
            print(f"| {row['label']} | {row['ppl']:.3f} | {row['removed']:.1%} | {row['relative_error']:.4f} | "
                  f"{row['seconds']:.0f} | {mib(row['extra_rss'])} |")
    print("\n| distillation after | ppl compressed | ppl after | gap recovered | steps | tokens | train min | +RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        if "recovered" in row:
            print(f"| {row['label']} | {row['ppl_pruned']:.3f} | {row['ppl_after']:.3f} | {row['recovered']:.1%} | "
                  f"{row['steps']} | {row['tokens']:,} | {row['train_seconds'] / 60:.1f} | {mib(row['extra_rss'])} |")
    if args.json:
        args.json.write_text(json.dumps({"dense_ppl": dense_ppl, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
