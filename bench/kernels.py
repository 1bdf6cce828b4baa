"""Decode-shaped matmuls (one row) on this CPU: how fast each kernel QuantizedLinear can use reads
its weights, beside fp32 ``torch.mm`` on the same shapes, in the same process.

Decode of a batch-1 LLM is one matrix-vector product per linear layer, so its speed is the rate at
which a kernel streams the weight from memory. Shapes are SmolLM2-135M's (q/o, k/v, gate/up, down,
the tied head). Each timing walks over enough distinct copies of the weight (``--megabytes`` of
fp32 in all) that no copy stays in cache between its calls; the reported time is the median of
``--repeats`` walks, per call. "GB/s" is weight bytes read per second (fp32: 4 bytes a weight,
int8: 1, int4: 0.5 plus scales); "x fp32" is the fp32 time over the kernel's time, the speed-up a
decode step gets from that layer at most.

Kernels: ``aten._weight_int8pack_mm`` (int8 weight-only, bf16 activations), and
``aten._weight_int4pack_mm_for_cpu`` (int4 tinygemm, group 64, bf16 activations) — the two
weight-only kernels QuantizedLinear runs on CPU — and ``torch._int_mm`` (int8 x int8, the W8A8
path, activation quantization included).

Usage: .venv/bin/python bench/kernels.py [--threads 1,2] [--megabytes 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

SHAPES = [(576, 576), (192, 576), (1536, 576), (576, 1536), (49152, 576)]  # (out, in)


def per_call(fn: Callable[[int], object], copies: int, repeats: int) -> float:
    """Median over ``repeats`` walks of the seconds one call takes (each walk calls every copy)."""
    walks = []
    for _ in range(repeats + 1):  # the first walk warms up
        start = time.perf_counter()
        for index in range(copies):
            fn(index)
        walks.append((time.perf_counter() - start) / copies)
    return statistics.median(walks[1:])


def row(out: int, inp: int, megabytes: float, repeats: int) -> dict[str, float]:
    copies = max(2, int(megabytes * 1e6 // (out * inp * 4)))
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, inp, generator=generator)
    xb = x.bfloat16()
    weights = [torch.randn(out, inp, generator=generator) for _ in range(copies)]
    times = {"fp32": per_call(lambda i: torch.mm(x, weights[i].t()), copies, repeats)}

    codes8 = [torch.randint(-127, 128, (out, inp), dtype=torch.int8, generator=generator) for _ in range(copies)]
    scales = torch.rand(out, generator=generator).bfloat16()
    times["int8"] = per_call(lambda i: torch.ops.aten._weight_int8pack_mm(xb, codes8[i], scales), copies, repeats)

    def quantized_rows(i: int) -> torch.Tensor:
        step = x.abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / 127.0
        xq = torch.round(x / step).clamp_(-127, 127).to(torch.int8)
        return torch._int_mm(xq, codes8[i].t()).float() * step

    times["w8a8"] = per_call(quantized_rows, copies, repeats)
    codes8.clear()  # free before the int4 copies are made

    group = 64
    packed = [torch.ops.aten._convert_weight_to_int4pack_for_cpu(
        torch.randint(0, 16, (out, inp), dtype=torch.int32, generator=generator), 1) for _ in range(copies)]
    scales_zeros = torch.rand(inp // group, out, 2, generator=generator).bfloat16()
    times["int4"] = per_call(
        lambda i: torch.ops.aten._weight_int4pack_mm_for_cpu(xb, packed[i], group, scales_zeros), copies, repeats)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--megabytes", type=float, default=300.0, help="fp32 bytes walked per timing (defeats caches)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    weight_bytes = {"fp32": 4.0, "int8": 1.0, "w8a8": 1.0, "int4": 0.5 + 4 / 64}  # bf16 scale+offset per 64
    print(f"torch {torch.__version__}; load average {os.getloadavg()[0]:.2f}; median of {args.repeats}; "
          f"{args.megabytes:.0f} MB of fp32 weights walked per timing")
    print(f"{'threads':>7} {'shape':>10} | {'fp32 us':>8} {'GB/s':>5} | "
          + " | ".join(f"{k:>5} us {'GB/s':>5} {'x fp32':>6}" for k in ("int8", "w8a8", "int4")))
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for out, inp in SHAPES:
            times = row(out, inp, args.megabytes, args.repeats)
            cells = []
            for kernel in ("int8", "w8a8", "int4"):
                rate = out * inp * weight_bytes[kernel] / times[kernel] / 1e9
                cells.append(f"{times[kernel] * 1e6:>8.0f} {rate:>5.1f} {times['fp32'] / times[kernel]:>6.2f}")
            fp32_rate = out * inp * 4 / times["fp32"] / 1e9
            print(f"{threads:>7} {f'{out}x{inp}':>10} | {times['fp32'] * 1e6:>8.0f} {fp32_rate:>5.1f} | "
                  + " | ".join(cells), flush=True)
    print(f"load average after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
