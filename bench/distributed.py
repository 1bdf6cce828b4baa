"""Data-parallel calibration: wall time and memory per rank, one process against ``--nproc N``.

Every row runs ``slimkit run`` as a fresh command on a synthetic Llama (bench/scale_models.py:
real Llama-3.2-1B shapes, random bf16 weights, the first ``--blocks`` blocks) with the same recipe,
once as one process with ``--threads`` threads, once as ``--nproc N`` ranks with
``--threads / N`` threads each, so both use the same cores. Reported per row: the step's wall time
(median of ``--repeats``) and the step's peak resident memory of every rank (as the catalogue
records it, ``details.data_parallel.peak_rss_bytes``), with their ratios to the one-process row.
Whether the models agree is checked too: the same content id for the exact methods, the same
pruning masks for SparseGPT.

On a machine of 2 cores the ranks cannot be faster than one process with 2 threads (the point of
this benchmark here is memory per rank and correctness); on several GPUs or machines each rank has
its own device. The load average is printed: this machine is shared.

    .venv/bin/python bench/distributed.py                  # wanda and gptq, 1 vs 2 ranks
    .venv/bin/python bench/distributed.py --methods gptq --samples 256 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from scale_models import ensure_model  # noqa: E402

METHODS = {
    "wanda": "  - method: prune.unstructured\n    params: {sparsity: 0.5, scorer: wanda, scope: row}\n",
    "gptq": "  - method: quantize.gptq\n    params: {bits: 4, group_size: 128}\n",
    "sparsegpt": "  - method: prune.sparsegpt\n    params: {sparsity: 0.5}\n",
}


def run_once(model: Path, method: str, args: argparse.Namespace, ranks: int, work: Path) -> dict:
    recipe = work / f"{method}.yaml"
    recipe.write_text(f"name: dp-{method}\ncalibration: {{n_samples: {args.samples}, seq_len: {args.seq_len}, "
                      f"seed: 0, precision: bfloat16}}\nsteps:\n{METHODS[method]}")
    out = work / f"{method}-{ranks}"
    command = [sys.executable, "-m", "slimkit", "--threads", str(args.threads),  # divided among the ranks
               "--catalogue", f"sqlite:///{work / 'catalogue.db'}", "run", str(recipe), "-m", str(model),
               "--out", str(out), "--overwrite", "--json", "--force", "--dtype", "bfloat16"]
    if ranks > 1:
        command += ["--nproc", str(ranks)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{method} with {ranks} rank(s) failed: {done.stderr.strip().splitlines()[-1:]}")
    result = json.loads(done.stdout)
    step = result["steps"][0]
    peaks = step["details"].get("data_parallel", {}).get("peak_rss_bytes") or [step["peak_rss_bytes"]]
    return {"step_s": step["wall_time_s"], "peaks": peaks, "content_id": result["content_id"], "out": str(out)}


def same_masks(one: str, two: str) -> bool:
    from safetensors.torch import load_file

    def load(folder: str) -> dict:
        found: dict = {}
        for part in sorted(Path(folder).glob("*.safetensors")):
            found.update(load_file(str(part)))
        return found

    a, b = load(one), load(two)
    return a.keys() == b.keys() and all(bool(((a[k] == 0) == (b[k] == 0)).all()) for k in a)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="wanda,gptq", help=f"comma list of {', '.join(METHODS)}")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=2, help="blocks of the synthetic Llama-3.2-1B")
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="threads in all (divided among the ranks)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--root", type=Path,
                        default=Path(os.environ.get("SLIMKIT_SCALE_ROOT", "~/.cache/slimkit/scale")).expanduser())
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")
    model = ensure_model(args.root, "1b", args.blocks)
    print(f"model: synthetic Llama-3.2-1B shapes, {args.blocks} blocks, bf16 ({model})")
    import torch

    print(f"calibration: {args.samples} x {args.seq_len} tokens; {args.threads} threads in all; "
          f"{args.repeats} repeat(s); torch {torch.__version__}, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}; load average before: {os.getloadavg()[0]:.2f}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="slimkit-bench-dp-") as scratch:
        work = Path(scratch)
        for method in methods:
            for ranks in (1, args.ranks):
                runs = [run_once(model, method, args, ranks, work) for _ in range(args.repeats)]
                rows.append({"method": method, "ranks": ranks, "step_s": statistics.median(r["step_s"] for r in runs),
                             "peaks": runs[-1]["peaks"], "content_id": runs[-1]["content_id"], "out": runs[-1]["out"]})
            one, many = rows[-2], rows[-1]
            many["same"] = ("same model" if one["content_id"] == many["content_id"]
                            else "same masks" if same_masks(one["out"], many["out"]) else "DIFFERENT")
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    print("| method | ranks | threads/rank | step wall time | vs 1 process | peak RSS per rank (GiB) | "
          "max rank vs 1 process | result |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        base = next(r for r in rows if r["method"] == row["method"] and r["ranks"] == 1)
        gib = [p / 2**30 for p in row["peaks"]]
        print(f"| {row['method']} | {row['ranks']} | {max(1, args.threads // row['ranks'])} | {row['step_s']:.1f} s | "
              f"x{row['step_s'] / base['step_s']:.2f} | {' / '.join(f'{g:.2f}' for g in gib)} | "
              f"x{max(row['peaks']) / max(base['peaks']):.2f} | {row.get('same', 'reference')} |")


if __name__ == "__main__":
    main()
