"""WikiText-2 perplexity of SmolLM2-135M: slimkit's evaluator against the GPTQ reference loop.

Both run in the same process on the same model and token stream:
- slimkit: ``host.evaluate("perplexity", ...)`` (float64 NLL over each window's next tokens);
- reference: the loop of the GPTQ/SparseGPT repositories: ``model(window, labels=window).loss``
  times the window length, summed, divided by ``windows * seq_len``.
The two differ by design only in that GPTQ's loop scales each window's mean loss by seq_len
instead of seq_len - 1 predicted tokens, which cancels in the mean.

Usage: python bench/perplexity_smollm2.py [--seq-len 2048] [--max-windows N] [--threads 2] [--repeats 1]
The full run (148 windows of 2048) takes about 30 minutes on 2 cores; the published figure for
this GGUF model is 21.61. ``--seq-len 512 --max-windows 32`` gives 28.82 in about a minute.
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
    params = {"text": str(text), "seq_len": args.seq_len, "max_windows": windows}

    ours, theirs, ppl_ours, ppl_ref = [], [], 0.0, 0.0
    for _ in range(args.repeats):
        t = time.perf_counter()
        ppl_ours = host.evaluate("perplexity", model, params=params)["perplexity"]
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        ppl_ref = reference_ppl(model.model, ids, args.seq_len, windows)
        theirs.append(time.perf_counter() - t)
    load = os.getloadavg()
    print(f"SmolLM2-135M (GGUF Q4_1 -> fp32), WikiText-2 raw test, {ids.numel():,} tokens, "
          f"{windows} windows x {args.seq_len}, {args.threads} threads, {args.repeats} repeat(s), load {load_s:.1f} s")
    print(f"{'implementation':<28}{'ppl':>10}{'median s':>12}")
    print(f"{'slimkit perplexity':<28}{ppl_ours:>10.3f}{statistics.median(ours):>12.1f}")
    print(f"{'GPTQ reference loop':<28}{ppl_ref:>10.3f}{statistics.median(theirs):>12.1f}")
    print(f"ppl ratio slimkit/reference: {ppl_ours / ppl_ref:.5f}   time ratio: "
          f"{statistics.median(ours) / statistics.median(theirs):.2f}   "
          f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0 if math.isclose(ppl_ours, ppl_ref, rel_tol=1e-3) else 1


if __name__ == "__main__":
    raise SystemExit(main())
