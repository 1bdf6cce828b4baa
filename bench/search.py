"""Recipe search on SmolLM2-135M: lowest perplexity at <= 0.3x the fp32 file, under a trial budget.

One process, one fp32 input (the GGUF's weights dequantized by slimkit's loader and saved once as a
safetensors folder in the work folder: "x fp32" is relative to that folder's bytes on disk, as the
catalogue records every model's size; quantized folders hold packed integer codes). Four runs:

1. the reference: the best hand-written recipe of README's tables that meets the size limit (RTN
   int8 per channel with int8 embeddings, 0.251x there), run as a one-point sweep with the same
   evaluations, in its own catalogue;
2. TPE search (Optuna) of ``--trials`` new trials over optional pruning then quantization (see
   ``space_yaml``), in its own catalogue;
3. random search of the same budget, in another catalogue (neither reuses the other's results);
4. the TPE search again, same file and seed, on the first TPE run's catalogue, with
   ``--rerun-trials`` new trials: what the catalogue gives back (trials, steps, evaluations).

Every trial is scored with the cheap proxy (perplexity on ``--proxy-windows`` windows); the
trials on the proxy's front are then scored fully (``--eval-windows`` x ``--eval-len`` WikiText-2
raw test windows), and so is the input model. Calibration: ``--calib-samples`` x ``--calib-len``
windows of WikiText-2 valid, seed 0, float32. Everything runs inline with ``--threads`` threads.

    PYTHONPATH=. .venv/bin/python bench/search.py                  # about 25 minutes on 2 cores
    PYTHONPATH=. .venv/bin/python bench/search.py --dry-run        # check the files and the space only
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from pruning import ASSETS, smol_inputs  # noqa: E402

sys.path[:] = [p for p in sys.path if not p or Path(p).resolve() != BENCH]  # bench/kernels.py shadows `kernels`

#: README's quantization table: the only row at <= 0.3x the fp32 file (0.251x, ppl 29.202 vs dense
#: 29.188 on 40x512 windows); its int4 g64 rows keep fp32 embeddings and are 0.316x.
REFERENCE = {"method": "quantize.rtn", "params": {"bits": 8, "embeddings": "int8"}}
REFERENCE_LABEL = "RTN int8 per channel + int8 embeddings (README)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=Path, default=ASSETS)
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the fp32 model and the catalogues (default: a temporary one, removed)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--trials", type=int, default=8, help="new trials of each search")
    parser.add_argument("--rerun-trials", type=int, default=4, help="new trials of the second TPE run")
    parser.add_argument("--size-limit", type=float, default=0.3, help="constraint: size <= LIMIT x the fp32 file")
    parser.add_argument("--calib-samples", type=int, default=16)
    parser.add_argument("--calib-len", type=int, default=256)
    parser.add_argument("--proxy-windows", type=int, default=4)
    parser.add_argument("--eval-windows", type=int, default=20)
    parser.add_argument("--eval-len", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0, help="recipes' and samplers' seed")
    parser.add_argument("--json", type=Path, default=None, help="also write every run's result here")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the search and reference files against the installed methods; run nothing")
    args = parser.parse_args(argv)
    for name in ("threads", "trials", "rerun_trials", "calib_samples", "calib_len", "proxy_windows",
                 "eval_windows", "eval_len"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(args, name)})")
    if not 0 < args.size_limit:
        parser.error(f"--size-limit must be positive (got {args.size_limit})")
    if args.proxy_windows > args.eval_windows:
        parser.error(f"--proxy-windows ({args.proxy_windows}) must not exceed --eval-windows ({args.eval_windows})")
    return args


def _goals_yaml(args: argparse.Namespace, valid: Path, test: Path) -> str:
    return (f"calibration: {{text: {json.dumps(str(valid))}, n_samples: {args.calib_samples}, "
            f"seq_len: {args.calib_len}, seed: 0}}\n"
            f"evaluate:\n  - metric: perplexity\n    params: {{text: {json.dumps(str(test))}, "
            f"seq_len: {args.eval_len}, max_windows: {args.eval_windows}}}\n"
            f"proxy: {{perplexity: {{max_windows: {args.proxy_windows}}}}}\n"
            f"objectives: [minimize perplexity]\n"
            f"constraints: [\"size <= {args.size_limit} x base\"]\n"
            f"seed: {args.seed}\n")


def space_yaml(args: argparse.Namespace, valid: Path, test: Path) -> str:
    """The search file: optional pruning (magnitude or SparseGPT, 10-50%), then RTN or GPTQ at
    3, 4 or 8 bits, per channel or in groups dividing SmolLM2's 576 and 1536 inputs, with float or
    int8 embeddings. Symmetric grids only: an asymmetric g32 grid lands back on the GGUF's own
    Q4_1 grid (SOURCE.md), which would flatter 4 bits."""
    return ("name: smollm2-prune-quantize\n"
            "steps:\n"
            "  - method: [prune.unstructured, prune.sparsegpt]\n"
            "    params: {sparsity: {range: [0.1, 0.5], step: 0.1}}\n"
            "    optional: true\n"
            "  - method: [quantize.rtn, quantize.gptq]\n"
            "    params: {bits: [3, 4, 8], group_size: [null, 32, 64, 96, 192], embeddings: [float, int8]}\n"
            + _goals_yaml(args, valid, test))


def reference_yaml(args: argparse.Namespace, valid: Path, test: Path) -> str:
    return ("name: smollm2-reference\n"
            f"steps:\n  - method: {REFERENCE['method']}\n    params: {json.dumps(REFERENCE['params'])}\n"
            + _goals_yaml(args, valid, test))


def _ppl(values: dict[str, float]) -> float | None:
    return values.get("perplexity.perplexity")


def best(result: Any) -> Any | None:
    """The feasible trial with the lowest fully evaluated perplexity (the front of one objective)."""
    return result.front[0] if result.front else None


def printer(base_size: list[float]) -> Any:
    def on_event(event: Any) -> None:
        trial = event.trial
        if event.kind in {"progress", "base"}:  # (the input model's metrics also come as a note)
            return
        if trial is None:
            print(f"  . {event.message}", flush=True)
            return
        text = f"  #{trial.number} {event.kind}: {trial.label}"
        if event.kind in {"done", "full"} and not event.message:
            values = trial.full_metrics if event.kind == "full" else trial.metrics
            ppl, size = _ppl(values), values.get("size")
            ratio = f", {size / base_size[0]:.3f}x" if size and base_size[0] else ""
            text += f" -> ppl {ppl:.3f}{ratio} ({'full' if event.kind == 'full' else 'proxy'})" if ppl else ""
            text += f", {trial.seconds:.0f} s" if event.kind == "done" else ""
        elif event.message and event.message != trial.label:
            text += f": {event.message}"
        print(text, flush=True)
    return on_event


def row(name: str, result: Any, base_size: float, trials: int | None = None) -> dict[str, Any]:
    top = best(result)
    full = top.values() if top is not None else {}
    return {"row": name, "recipe": top.label if top else "(none feasible)", "ppl": _ppl(full),
            "proxy_ppl": _ppl(top.metrics) if top else None,
            "size_x": full["size"] / base_size if top and "size" in full else None,
            "trials": trials if trials is not None else len(result.trials), "counts": result.counts,
            "feasible": sum(1 for t in result.trials if t.feasible), "steps_run": result.steps_run,
            "steps_reused": result.steps_reused, "steps_shared": result.steps_shared, "seconds": result.seconds}


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_tables(rows: list[dict[str, Any]], rerun: dict[str, Any] | None, results: dict[str, Any],
                 base_size: float) -> None:
    print("\n| run | best recipe | ppl (full) | ppl (proxy) | size x fp32 | trials run | feasible | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['row']} | {r['recipe']} | {_fmt(r['ppl'])} | {_fmt(r['proxy_ppl'])} | {_fmt(r['size_x'])} | "
              f"{r['counts']['done']} | {r['feasible']} of {r['trials']} | {r['seconds']:.0f} |")
    if rerun is not None:
        first = next(r for r in rows if r["row"].startswith("TPE"))
        print("\n| TPE run | trials from catalogue | new trials | steps run | steps reused from catalogue | "
              "steps shared in run | best ppl (full) | wall s |")
        print("|---|---|---|---|---|---|---|---|")
        for r in (first, rerun):
            print(f"| {r['row']} | {r['counts']['catalogue']} | {r['counts']['done']} | {r['steps_run']} | "
                  f"{r['steps_reused']} | {r['steps_shared']} | {_fmt(r['ppl'])} | {r['seconds']:.0f} |")
    for name, result in results.items():
        print(f"\n{name}: every trial (proxy ppl; full ppl where evaluated; x = size / fp32 file)")
        for t in result.trials:
            values = t.metrics
            size = values.get("size")
            print(f"  #{t.number:<2} {t.status:<9} {'ok ' if t.feasible else 'no ' if t.feasible is False else '   '}"
                  f"proxy {_fmt(_ppl(values)):>9} full {_fmt(_ppl(t.full_metrics)):>9} "
                  f"{_fmt(size / base_size if size else None):>6}x {t.seconds:6.0f} s  {t.label}"
                  + (f"  [{t.error}]" if t.error else ""))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    inputs = smol_inputs(args.assets)
    if inputs is None:
        return 2
    gguf, valid, test = inputs
    import torch

    torch.set_num_threads(args.threads)
    from slimkit import make_host
    from slimkit.core.search import Budget, SearchSpec, prepare, run_search, run_sweep

    host = make_host(load_entrypoints=False)
    search = SearchSpec.from_yaml(space_yaml(args, valid, test), source="search file")
    reference = SearchSpec.from_yaml(reference_yaml(args, valid, test), source="reference file")
    prepared = prepare(search, host, "search")
    prepare(reference, host, "sweep")
    if args.dry_run:
        print(search.to_yaml())
        print("dimensions: " + "; ".join(f"{d.name}: {d.describe()}" for d in prepared.space.dimensions()))
        print(f"reference: {REFERENCE_LABEL}: ok")
        return 0
    from slimkit.core.search.study import require_optuna

    require_optuna()  # (before any work: the reference would run first)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    from slimkit import load_model, save_model
    from slimkit.core.model_io import disk_bytes

    print(f"SmolLM2-135M (GGUF Q4_1 -> fp32 safetensors); {args.threads} threads; torch {torch.__version__}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}; load average before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"calibration WikiText-2 valid {args.calib_samples}x{args.calib_len}; proxy ppl {args.proxy_windows}x"
          f"{args.eval_len}, full ppl {args.eval_windows}x{args.eval_len} WikiText-2 raw test; "
          f"constraint size <= {args.size_limit}x; budget {args.trials} trials per search, "
          f"{args.rerun_trials} for the rerun", flush=True)
    started_all = time.perf_counter()
    scratch = None
    if args.work is None:
        scratch = tempfile.mkdtemp(prefix="slimkit-bench-search-")
        work = Path(scratch)
    else:
        work = args.work.expanduser().resolve()
        work.mkdir(parents=True, exist_ok=True)
    try:
        folder = work / "smollm2-fp32"
        if not (folder / "config.json").is_file():
            with contextlib.redirect_stderr(open(os.devnull, "w")):
                save_model(load_model(gguf), folder, {})
        base_size = float(disk_bytes(folder) or 0)
        print(f"fp32 folder {folder}: {base_size / 2**20:.1f} MiB", flush=True)
        shown = [base_size]
        results: dict[str, Any] = {}
        rows = []

        def catalogue(name: str) -> str:
            path = work / name / "catalogue.db"
            if name != "tpe":  # (the TPE catalogue is kept for the rerun)
                shutil.rmtree(path.parent, ignore_errors=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            return str(path)

        print("\n== reference (one-point sweep)", flush=True)
        results["reference"] = run_sweep(reference, str(folder), catalogue=catalogue("reference"),
                                         on_event=printer(shown))
        rows.append(row(REFERENCE_LABEL, results["reference"], base_size))
        shutil.rmtree(work / "tpe", ignore_errors=True)
        for name, sampler in (("tpe", "tpe"), ("random", "random")):
            print(f"\n== {sampler} search, {args.trials} trials", flush=True)
            results[name] = run_search(search, str(folder), budget=Budget(trials=args.trials),
                                       catalogue=catalogue(name), sampler=sampler, seed=args.seed,
                                       on_event=printer(shown))
            rows.append(row(f"{'TPE' if sampler == 'tpe' else 'random'} search", results[name], base_size))
        print(f"\n== TPE search again on the first one's catalogue, {args.rerun_trials} new trials", flush=True)
        results["tpe-again"] = run_search(search, str(folder), budget=Budget(trials=args.rerun_trials),
                                          catalogue=str(work / "tpe" / "catalogue.db"), sampler="tpe",
                                          seed=args.seed, on_event=printer(shown))
        rerun = row("TPE search, second run", results["tpe-again"], base_size)
        print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
              f"{time.perf_counter() - started_all:.0f} s in all")
        base = results["reference"]
        print(f"input model (fp32): ppl {_fmt(_ppl(base.base_full))} full, {_fmt(_ppl(base.base_metrics))} proxy; "
              f"{base_size / 2**20:.1f} MiB")
        print_tables(rows, rerun, results, base_size)
        if args.json:
            args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                             "base_size": base_size, "rows": rows, "rerun": rerun,
                                             "results": {k: r.to_dict() for k, r in results.items()}}, indent=1))
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
