"""WikiText-2 perplexity of SmolLM2-135M: slimkit's evaluator against the GPTQ reference loop.

Both run in the same process on the same model and token stream:
- slimkit: ``host.evaluate("perplexity", ...)`` (float64 NLL over each window's next tokens);
- reference: the loop of the GPTQ/SparseGPT repositories: ``model(window, labels=window).loss``
  times the window length, summed, divided by ``windows * seq_len``.
The two differ by design only in that GPTQ's loop scales each window's mean loss by seq_len
instead of seq_len - 1 predicted tokens, which cancels in the mean.

Usage: python bench/perplexity_smollm2.py [--seq-len 2048] [--max-windows N] [--compare-windows K]
                                          [--threads 2] [--repeats 1]
Both implementations run on the first K windows (default: all) for agreement and a time ratio;
slimkit alone then runs on all the windows asked for, to compare with the published figure for
this GGUF model at 2048 tokens, 21.61 (148 windows, about 30 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ASSETS = Path(__file__).resolve().parents[2] / "shared" / "assets"


def reference_ppl(model, ids: torch.Tensor, seq_len: int, windows: int) -> float:
    nlls = []
    with torch.inference_mode():
        for i in range(windows):
            batch = ids[i * seq_len : (i + 1) * seq_len].unsqueeze(0)
            loss = model(batch, labels=batch, use_cache=False).loss.float()
            nlls.append(loss * seq_len)
    return float(torch.exp(torch.stack(nlls).sum() / (windows * seq_len)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=Path, default=ASSETS)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--max-windows", type=int, default=None)
    parser.add_argument("--compare-windows", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    gguf = args.assets / "smollm2-135m-instruct-q4_1" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    text = args.assets / "wikitext-2" / "wikitext-2-raw-test.txt"
    if not gguf.is_file() or not text.is_file():
        print(f"needs {gguf} and {text} (../shared/assets)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)

    from slimkit import load_model, make_host
    from slimkit.core.data import TextSource, tokenize

    host = make_host(load_entrypoints=False)
    started = time.perf_counter()
    model = load_model(gguf)
    load_s = time.perf_counter() - started
    ids = tokenize(model.tokenizer, TextSource(text).text())
    windows = ids.numel() // args.seq_len
    if args.max_windows:
        windows = min(windows, args.max_windows)
    compare = min(args.compare_windows or windows, windows)
    params = {"text": str(text), "seq_len": args.seq_len, "max_windows": compare}

    ours, theirs, ppl_ours, ppl_ref = [], [], 0.0, 0.0
    for _ in range(args.repeats):
        t = time.perf_counter()
        ppl_ours = host.evaluate("perplexity", model, params=params)["perplexity"]
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        ppl_ref = reference_ppl(model.model, ids, args.seq_len, compare)
        theirs.append(time.perf_counter() - t)
    load = os.getloadavg()
    print(f"SmolLM2-135M (GGUF Q4_1 -> fp32), WikiText-2 raw test, {ids.numel():,} tokens, "
          f"{args.threads} threads, {args.repeats} repeat(s), model load {load_s:.1f} s")
    print(f"{'implementation':<24}{'windows':>9}{'seq_len':>9}{'ppl':>10}{'median s':>11}")
    print(f"{'slimkit perplexity':<24}{compare:>9}{args.seq_len:>9}{ppl_ours:>10.3f}{statistics.median(ours):>11.1f}")
    print(f"{'GPTQ reference loop':<24}{compare:>9}{args.seq_len:>9}{ppl_ref:>10.3f}{statistics.median(theirs):>11.1f}")
    print(f"ppl ratio slimkit/reference: {ppl_ours / ppl_ref:.5f}   time ratio: "
          f"{statistics.median(ours) / statistics.median(theirs):.2f}   "
          f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if compare < windows:
        t = time.perf_counter()
        full = host.evaluate("perplexity", model, params={**params, "max_windows": windows})
        print(f"{'slimkit perplexity':<24}{windows:>9}{args.seq_len:>9}{full['perplexity']:>10.3f}"
              f"{time.perf_counter() - t:>11.1f}   (published for this model at 2048: 21.61)")
    return 0 if math.isclose(ppl_ours, ppl_ref, rel_tol=1e-3) else 1


if __name__ == "__main__":
    raise SystemExit(main())
