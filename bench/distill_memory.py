"""Memory of distillation on SmolLM2-135M: the whole-logits path against chunked logits and
recomputed blocks, each in its own process (peak RSS is per process), same student, teacher,
batches and seed.

The student is SmolLM2 with 50% of its block weights pruned by magnitude, the teacher the dense
model (both float32, loaded from the shared Q4_1 GGUF); ``--steps`` AdamW steps on ``--batch`` x
``--seq`` tokens of WikiText-2 valid, logit KL at T=2, the blocks trained (106 M parameters).
Each mode but one runs with slimkit's fixed 1 MiB mmap threshold (`slimkit.core.memory.lean_heap`); the
"glibc's own heap" row leaves glibc's dynamic threshold, as slimkit did before.
Reported: the RSS once both models are loaded, the peak during the step above it, seconds per
training step, and the loss at every step (the two paths must give the same curve: the chunked
sums are reordered, so float rounding differs slightly).

Usage: .venv/bin/python bench/distill_memory.py [--steps 6] [--batch 4] [--seq 256] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
MODES = {"whole logits, kept activations (before)": {"logit_chunk": 0, "recompute_blocks": False},
         "chunked logits only": {"recompute_blocks": False},
         "chunked + recomputed, glibc's own heap": {"_glibc_heap": True},
         "chunked logits + recomputed blocks (default)": {}}


def child(args: argparse.Namespace, params: dict) -> dict:
    """One distillation in this process; prints a JSON line."""
    import torch

    sys.path.insert(0, str(BENCH))
    from pruning import rss_bytes, smol_inputs

    sys.path[:] = [p for p in sys.path if not p or Path(p).resolve() != BENCH]  # bench/kernels.py shadows `kernels`
    from slimkit import Recipe, load_model, make_host, run_recipe
    from slimkit.core.memory import peak_rss_bytes, release_free_memory, reset_peak

    torch.set_num_threads(args.threads)
    if params.pop("_glibc_heap", False):  # as before slimkit fixed glibc's mmap threshold (lean_heap)
        from slimkit.core import memory

        memory._lean = True  # lean_heap() then believes it ran, and leaves glibc's dynamic threshold
    inputs = smol_inputs(args.assets)
    if inputs is None:
        raise SystemExit(2)
    gguf, valid, _ = inputs
    host = make_host(load_entrypoints=False)
    student = load_model(gguf)
    pruned = Recipe.from_data({"steps": [{"method": "prune.unstructured", "params": {"sparsity": 0.5}}]})
    run_recipe(pruned, student, catalogue=False, inplace=True, host=host)
    teacher_folder = Path(args.work) / "teacher"
    if not teacher_folder.exists():
        from slimkit import save_model

        save_model(load_model(gguf), teacher_folder, {})
    recipe = Recipe.from_data({"steps": [{"method": "distill", "params": {
        "teacher": str(teacher_folder), "text": str(valid), "steps": args.steps, "seq_len": args.seq,
        "batch_size": args.batch, "lr": 1e-4, "temperature": 2.0, "checkpoint_every": 10_000, **params}}]})
    validated = recipe.resolve(host)
    release_free_memory()
    before = rss_bytes()  # the student; the runner loads the teacher (the same size) inside the run
    teacher_bytes = sum(t.numel() * t.element_size() for t in student.model.state_dict().values())
    reset_peak()
    started = time.perf_counter()
    result = run_recipe(validated, student, catalogue=False, inplace=True, host=host)
    details = result.steps[0].details
    return {"before": before, "teacher": teacher_bytes, "peak": peak_rss_bytes(),
            "seconds": time.perf_counter() - started, "train_seconds": details["train_seconds"],
            "loss_first": details["loss_first"], "loss_last": details["loss_last"], "steps": details["steps"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--assets", type=Path, default=BENCH.parents[1] / "shared" / "assets")
    parser.add_argument("--work", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print("RESULT " + json.dumps(child(args, json.loads(args.child))), flush=True)
        return 0
    import tempfile

    load = os.getloadavg()
    import torch

    print(f"load average at start {load[0]:.2f}; CPU capability {torch.backends.cpu.get_cpu_capability()}; "
          f"{args.steps} steps of {args.batch}x{args.seq} tokens, {args.threads} threads", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for label, params in MODES.items():
            command = [sys.executable, __file__, "--steps", str(args.steps), "--batch", str(args.batch), "--seq",
                       str(args.seq), "--threads", str(args.threads), "--assets", str(args.assets), "--work", work,
                       "--child", json.dumps(params)]
            done = subprocess.run(command, capture_output=True, text=True)
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                print(f"{label}: failed\n{done.stderr[-2000:]}")
                return 1
            rows.append((label, json.loads(line[7:])))
            print(f"  {label}: done", flush=True)
    gib = 2 ** 30
    print(f"\n{'mode':<48}{'student GiB':>12}{'peak':>8}{'above both models':>19}{'s/step':>8}  loss first -> last")
    for label, row in rows:
        print(f"{label:<48}{row['before'] / gib:>12.2f}{row['peak'] / gib:>8.2f}"
              f"{(row['peak'] - row['before'] - row['teacher']) / gib:>19.2f}"
              f"{row['train_seconds'] / row['steps']:>8.1f}  "
              f"{row['loss_first']:.5f} -> {row['loss_last']:.5f}")
    load = os.getloadavg()
    print(f"load average at end {load[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
