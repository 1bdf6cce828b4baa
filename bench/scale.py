"""Block-streamed compression at scale: synthetic Llama-3 models of about 1B, 3B and 8B parameters
(real shapes, random bf16 weights written once by bench/scale_models.py, no download) compressed
with ``runtime: {stream: true, dtype: bfloat16}``, each run in a fresh process.

Methods: RTN int4 g128 (``quantize.rtn``), Wanda 50% per row (``prune.unstructured``, scorer
``wanda``) and GPTQ int4 g128 (``quantize.gptq``). Calibration: ``--calib-samples`` x
``--calib-len`` windows (default 128 x 128 = 16,384 tokens, enough for a full-rank Hessian at the
8B's widest input, down_proj's 14,336) of the bundled TinyStories sample through the stories260K
tokenizer the model folders carry, run in bfloat16 autocast (``calibration: {precision: bfloat16}``).

Measured per run: the child's peak RSS, the larger of the kernel's count (``ru_maxrss`` from
``wait4`` on that very child; slimkit resets that high-water mark as its step starts, so it covers
the step and what follows) and VmRSS polled from ``/proc/<pid>/status`` every 0.2 s over the
child's whole life (which also places the peak in a phase); the wall time of ``run_recipe``;
time per block from the method's progress events (the time between two blocks' events: read,
compress, write; the median of blocks 2..N); setup (open, content id, calibration capture, first
block) and finish (unvisited head copied, content id of the output, rename).
Beside it, on the 1B shape, llm-compressor 0.14 (``oneshot``: QuantizationModifier W4A16 for
RTN, WandaPruningModifier, GPTQModifier W4A16; same windows, the model loaded whole in bf16)
in ``.venv-bench`` (``make .venv-bench/.installed``): its time is the load, ``oneshot`` and
``save_pretrained(save_compressed=True)`` (as slimkit's includes reading and writing the
shards), its peak RSS holds the whole model.

Default plan (``make bench-scale``): every method on the whole 1B shape; RTN on the whole 3B and
8B; Wanda on the 3B and 8B truncated to their first 4 blocks, GPTQ to 2 (``--layers``: a GPTQ
block of the 8B takes minutes on 2 cores; peak memory per block is the same, the table says
"4/32"). ``--shapes tiny --no-peer`` is CI's dry run.

Usage: .venv/bin/python bench/scale.py [--shapes 1b,3b,8b] [--methods rtn,wanda,gptq]
       [--layers wanda=4,gptq=2 | --layers 4] [--full-shapes 1b] [--root DIR] [--no-peer] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
from scale_models import SHAPES, ensure_model, needed_bytes  # noqa: E402

sys.path[:] = [p for p in sys.path if not p or Path(p).resolve() != BENCH]  # bench/kernels.py shadows `kernels`

GIB = 2 ** 30
METHODS = {  # key: (step, needs calibration)
    "rtn": ({"method": "quantize.rtn", "params": {"bits": 4, "group_size": 128}}, False),
    "wanda": ({"method": "prune.unstructured", "params": {"sparsity": 0.5, "scorer": "wanda", "scope": "row"}}, True),
    "gptq": ({"method": "quantize.gptq", "params": {"bits": 4, "group_size": 128}}, True),
}
MAX_MEMORY = "6GiB"
TARGET_GIB = 6.0


def runtime_spec():
    """The runs' runtime: streamed, bf16, and the memory budget where RuntimeSpec has one.
    (The one place ``max_memory`` is passed: RuntimeSpec gained it alongside this benchmark.)"""
    from slimkit.core.runtime import RuntimeSpec

    extra = {"max_memory": MAX_MEMORY} if "max_memory" in RuntimeSpec.model_fields else {}
    return RuntimeSpec(stream=True, dtype="bfloat16", **extra)


def recipe_data(job: dict) -> dict:
    step, calibrated = METHODS[job["method"]]
    data = {"name": f"scale-{job['method']}", "steps": [step]}
    if calibrated:
        data["calibration"] = {"n_samples": job["calib_samples"], "seq_len": job["calib_len"], "seed": job["seed"],
                               "precision": "bfloat16"}
    return data


def slimkit_child(job: dict) -> dict:
    """One streamed run in this process."""
    import torch

    torch.set_num_threads(job["threads"])
    from slimkit import Recipe, make_host, run_recipe

    host = make_host(load_entrypoints=False)
    recipe = Recipe.from_data(recipe_data(job))
    runtime = runtime_spec()
    events: list[tuple[float, str, int, int, str]] = []
    started = time.time()

    def progress(event) -> None:
        events.append((time.time() - started, event.stage, event.done, event.total, event.message))

    result = run_recipe(recipe, job["model"], out=job["out"], overwrite=True, runtime=runtime, catalogue=False,
                        host=host, progress=progress)
    total = time.time() - started
    step = result.steps[0]
    return {"started": started, "total_s": total, "step_s": step.wall_time_s, "step_peak_rss": step.peak_rss_bytes,
            "block_done": block_times(events), "summary": step.summary, "runtime": runtime.model_dump(),
            "output_bytes": sum(f.stat().st_size for f in Path(job["out"]).iterdir() if f.is_file())}


def block_times(events: list) -> list[float]:
    """When each block was done (seconds from the start): the methods report ``blocks`` events,
    or ``layers`` events named ``model.layers.N...`` (RTN: a block is done at its last layer)."""
    blocks = [e for e in events if e[1] == "blocks"]
    if blocks:
        return [e[0] for e in blocks]
    last: dict[int, float] = {}
    for at, stage, _, _, message in events:
        if stage == "layers" and message.startswith("model.layers."):
            last[int(message.split(".")[2])] = at
    return [last[i] for i in sorted(last)]


def peer_child(job: dict) -> dict:
    """llm-compressor's oneshot on the whole model, in this process (.venv-bench)."""
    os.environ.setdefault("LLM_COMPRESSOR_LOG_LEVEL", "WARNING")
    os.environ.setdefault("TORCHAO_FORCE_SKIP_LOADING_SO_FILES", "1")
    import torch

    torch.set_num_threads(job["threads"])
    from loguru import logger

    logger.remove()
    from transformers import AutoModelForCausalLM

    from slimkit.core.data import TextSource, calibration_samples
    from slimkit.core.model_io import example_text, load_tokenizer

    started = time.time()
    model = AutoModelForCausalLM.from_pretrained(job["model"], dtype=torch.bfloat16).eval()
    loaded = time.time() - started
    from llmcompressor import oneshot

    method = job["method"]
    if method == "wanda":
        from llmcompressor.modifiers.pruning import WandaPruningModifier

        recipe = WandaPruningModifier(sparsity=0.5, mask_structure="0:0", targets=[r"re:model.layers.\d+$"],
                                      ignore=[r"re:.*lm_head"])
    else:
        from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

        recipe = (GPTQModifier(scheme="W4A16", targets="Linear", ignore=["lm_head"], block_size=128,
                               dampening_frac=0.01, actorder=None) if method == "gptq"
                  else QuantizationModifier(scheme="W4A16", targets="Linear", ignore=["lm_head"]))
    if METHODS[method][1]:
        calibration = calibration_samples(load_tokenizer(job["model"]), TextSource(example_text("tinystories")),
                                          n_samples=job["calib_samples"], seq_len=job["calib_len"], seed=job["seed"],
                                          precision="bfloat16")
        rows = [{"input_ids": w.unsqueeze(0), "attention_mask": torch.ones(1, w.numel(), dtype=torch.long)}
                for w in calibration.input_ids]
        loader = torch.utils.data.DataLoader(rows, batch_size=None, shuffle=False)
        oneshot(model=model, dataset=loader, recipe=recipe, num_calibration_samples=len(rows),
                max_seq_length=job["calib_len"])
    else:
        oneshot(model=model, recipe=recipe)
    compressed = time.time() - started
    saved: dict = {}
    try:  # what slimkit's run does besides: write the result (packed int4 / sparse), not held twice
        model.save_pretrained(job["out"], save_compressed=True)
        saved["save_s"] = time.time() - started - compressed
    except Exception as error:  # the peer's own save failing is reported, not the benchmark's failure
        saved["save_error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    return {"started": started, "total_s": time.time() - started, "load_s": loaded, "oneshot_s": compressed - loaded,
            "block_done": [], **saved}


def check_forward_child(job: dict) -> dict:
    """The model's blocks run one at a time from its shards on 4 x 128 random ids: the largest
    hidden-state magnitude after each block (all finite, or the run says where not)."""
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    torch.set_num_threads(job["threads"])
    folder = Path(job["model"])
    config = AutoConfig.from_pretrained(folder)
    weight_map = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]

    def read(prefix: str) -> dict[str, torch.Tensor]:
        files = sorted({f for k, f in weight_map.items() if k.startswith(prefix)})
        out = {}
        for file in files:
            with safe_open(str(folder / file), framework="pt") as handle:
                out.update({k[len(prefix):]: handle.get_tensor(k) for k in handle.keys() if k.startswith(prefix)})
        return out

    ids = torch.randint(0, 512, (4, 128), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hidden = read("model.embed_tokens.")["weight"][ids]
        positions = torch.arange(128).unsqueeze(0)
        rotary = LlamaRotaryEmbedding(config).to(torch.bfloat16)(hidden, positions)
        largest = []
        for index in range(config.num_hidden_layers):
            layer = LlamaDecoderLayer(config, index).to(torch.bfloat16)
            layer.load_state_dict(read(f"model.layers.{index}."))
            out = layer(hidden, attention_mask=None, position_ids=positions, position_embeddings=rotary)
            hidden = out[0] if isinstance(out, tuple) else out
            largest.append(float(hidden.float().abs().max()))
            if not torch.isfinite(hidden).all():
                raise SystemExit(f"non-finite hidden states after block {index}")
    return {"largest": largest}


def run_child(kind: str, job: dict, python: str, log: Path) -> dict:
    """``job`` in a fresh process: its RESULT, its peak RSS (wait4's ru_maxrss) and the polled peak."""
    command = [python, str(Path(__file__).resolve()), "--child", kind, json.dumps(job)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    with log.open("w") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        samples: list[tuple[float, int]] = []
        stop = threading.Event()

        def poll() -> None:
            status = Path(f"/proc/{child.pid}/status")
            while not stop.is_set():
                try:
                    line = next(x for x in status.read_text().splitlines() if x.startswith("VmRSS:"))
                    samples.append((time.time(), int(line.split()[1]) * 1024))
                except (OSError, StopIteration):
                    pass
                stop.wait(0.2)

        watcher = threading.Thread(target=poll, daemon=True)
        watcher.start()
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        stop.set()
        watcher.join()
    text = log.read_text()
    line = next((x for x in text.splitlines() if x.startswith("RESULT ")), None)
    if child.returncode != 0 or line is None:
        tail = "\n".join(text.splitlines()[-15:])
        return {"error": f"exit {child.returncode}: {tail}"}
    result = json.loads(line[7:])
    # ru_maxrss is the kernel's high-water mark, which slimkit resets as each step starts (to
    # record the step's own peak): it covers the step and what follows; the polled samples cover
    # the whole life (at 0.2 s). The peak reported is the larger.
    result["wait4_peak_rss"] = usage.ru_maxrss * 1024
    result["peak_rss"] = max(result["wait4_peak_rss"], max((s[1] for s in samples), default=0))
    if samples:
        at, peak = max(samples, key=lambda s: s[1])
        result["polled_peak_rss"] = peak
        result["polled_peak_at_s"] = at - result.get("started", at)
        start = result.get("started", samples[0][0])
        trace: dict[int, float] = {}  # GiB at each whole second of the run (its largest sample)
        for when, rss in samples:
            second = int(when - start)
            trace[second] = max(trace.get(second, 0.0), round(rss / GIB, 3))
        result["rss_trace"] = sorted(trace.items())
    return result


def summarise(row: dict) -> None:
    """Per-block seconds, setup and finish from the block completion times."""
    done = row.get("block_done") or []
    if len(done) >= 2:
        gaps = [b - a for a, b in zip(done, done[1:])]
        row["s_per_block"] = statistics.median(gaps)
        row["block_s"] = [round(g, 2) for g in gaps]
        row["first_block_at_s"] = done[0]
        row["setup_s"] = max(0.0, done[0] - row["s_per_block"])  # before the first block, estimated
        row["finish_s"] = row["total_s"] - done[-1]
        peak_at = row.get("polled_peak_at_s")
        if peak_at is not None:
            row["peak_phase"] = ("setup" if peak_at < done[0] - row["s_per_block"] else
                                 "finish" if peak_at > done[-1] else
                                 f"block {sum(1 for d in done if d < peak_at) + 1}")
    elif row.get("total_s") is not None and row.get("blocks"):
        row["s_per_block"] = row["total_s"] / row["blocks"]  # the peer: no per-block events


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_tables(rows: list[dict], header: str) -> None:
    from slimkit.core.hardware import cpu_capability, cpu_model

    print(f"\n{header}\nCPU {cpu_model()}, torch capability {cpu_capability()}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    title = (f"{'shape':<6}{'params':>8}{'blocks':>8} {'method':<7}{'tool':<15}{'peak GiB':>9}{'total s':>9}"
             f"{'s/block':>9}{'s/100M':>8}{'setup s':>8}{'finish s':>9}  ratio vs llm-compressor")
    print(title + "\n" + "-" * len(title))
    peers = {(r["shape"], r["method"]): r for r in rows if r["tool"] == "llm-compressor" and "error" not in r}
    for r in rows:
        blocks = f"{r['blocks']}/{r['layers']}"
        if "error" in r:
            print(f"{r['shape']:<6}{r['params'] / 1e9:>7.2f}B{blocks:>8} {r['method']:<7}{r['tool']:<15} failed: "
                  f"{r['error'].splitlines()[-1][:80]}")
            continue
        per100m = r["s_per_block"] / (r["block_params"] / 1e8) if r.get("s_per_block") else None
        ratio = ""
        peer = peers.get((r["shape"], r["method"]))
        if peer and r["tool"] == "slimkit" and r["blocks"] == r["layers"]:
            ratio = f"RSS {r['peak_rss'] / peer['peak_rss']:.2f}x, time {r['total_s'] / peer['total_s']:.2f}x"
        print(f"{r['shape']:<6}{r['params'] / 1e9:>7.2f}B{blocks:>8} {r['method']:<7}{r['tool']:<15}"
              f"{r['peak_rss'] / GIB:>9.2f}{r['total_s']:>9.1f}{fmt(r.get('s_per_block'), '.2f'):>9}"
              f"{fmt(per100m, '.2f'):>8}{fmt(r.get('setup_s'), '.1f'):>8}{fmt(r.get('finish_s'), '.1f'):>9}  {ratio}")
    ours = [r for r in rows if r["tool"] == "slimkit" and "error" not in r]
    for method in METHODS:
        mine = sorted((r for r in ours if r["method"] == method and r.get("s_per_block")),
                      key=lambda r: r["block_params"])
        if len(mine) < 2:
            continue
        per = [r["s_per_block"] / (r["block_params"] / 1e8) for r in mine]
        peaks = [r["peak_rss"] / GIB for r in mine]
        print(f"{method}: s per 100M block parameters " + ", ".join(f"{r['shape']} {p:.2f}" for r, p in zip(mine, per))
              + f" (largest/smallest {max(per) / min(per):.2f}: 1.00 is linear in size); peak GiB "
              + ", ".join(f"{r['shape']} {p:.2f}" for r, p in zip(mine, peaks))
              + f" ({max(peaks) / min(peaks):.2f}x from smallest to largest)")
    verdicts = []
    for r in ours:
        if r["shape"] == "8b":
            verdicts.append(f"8b {r['method']} peak {r['peak_rss'] / GIB:.2f} GiB "
                            f"{'<=' if r['peak_rss'] / GIB <= TARGET_GIB else '>'} {TARGET_GIB:g} GiB")
    if verdicts:
        print("target: " + "; ".join(verdicts))


def print_markdown(rows: list[dict]) -> None:
    print("\n| shape | blocks run | method | tool | peak RSS GiB | total s | s/block | s/100M block params "
          "| setup s | finish s | load |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            continue
        per100m = r["s_per_block"] / (r["block_params"] / 1e8) if r.get("s_per_block") else None
        blocks = f"{r['blocks']}/{r['layers']}" + ("" if r["blocks"] == r["layers"] else " (truncated)")
        print(f"| {r['shape']} | {blocks} | {r['method']} | {r['tool']} | {r['peak_rss'] / GIB:.2f} | "
              f"{r['total_s']:.0f} | {fmt(r.get('s_per_block'), '.1f')} | {fmt(per100m, '.1f')} | "
              f"{fmt(r.get('setup_s'), '.0f')} | {fmt(r.get('finish_s'), '.0f')} | {r['load_before']:.1f} |")


def parse_layers(text: str | None) -> dict[str, int]:
    """``4`` (every method) or ``wanda=4,gptq=4`` -> method -> blocks."""
    if not text:
        return {}
    if text.isdigit():
        return {m: int(text) for m in METHODS}
    out = {}
    for part in text.split(","):
        method, _, count = part.partition("=")
        if method not in METHODS or not count.isdigit() or int(count) < 2:
            raise argparse.ArgumentTypeError(f"--layers: {part!r} is not METHOD=K with K >= 2 (methods: "
                                             f"{', '.join(METHODS)})")
        out[method] = int(count)
    return out


def choices(text: str, known, what: str) -> list[str]:
    values = [v for v in text.split(",") if v]
    unknown = [v for v in values if v not in known]
    if unknown or not values:
        raise argparse.ArgumentTypeError(f"unknown {what} {unknown or text!r}; known: {', '.join(known)}")
    return values


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        self.exit(2, f"bench/scale.py: {message}\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = _Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", type=lambda t: choices(t, SHAPES, "shape"), default=["1b", "3b", "8b"])
    parser.add_argument("--methods", type=lambda t: choices(t, METHODS, "method"), default=list(METHODS))
    parser.add_argument("--layers", type=parse_layers, default=parse_layers("wanda=4,gptq=2"),
                        help="truncate runs to K blocks: K, or METHOD=K,... (default wanda=4,gptq=2)")
    parser.add_argument("--full-shapes", type=lambda t: choices(t, SHAPES, "shape") if t else [], default=["1b"],
                        help="shapes always run whole whatever --layers says (default 1b; '' for none)")
    parser.add_argument("--calib-samples", type=int, default=128)
    parser.add_argument("--calib-len", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="runs per row (the median is reported)")
    parser.add_argument("--root", type=Path, default=Path(os.environ.get("SLIMKIT_SCALE_ROOT", "~/.cache/slimkit/scale"))
                        .expanduser(), help="where the synthetic models and run outputs go (outside the repo)")
    parser.add_argument("--no-peer", action="store_true", help="skip llm-compressor")
    parser.add_argument("--peer-python", default=str(REPO / ".venv-bench" / "bin" / "python"))
    parser.add_argument("--check-forward", action="store_true", help="first run each model's blocks on random "
                        "ids from its shards and check the hidden states stay finite")
    parser.add_argument("--json", type=Path, default=BENCH / "scale.json")
    parser.add_argument("--append", action="store_true", help="keep the JSON's rows from other runs (same "
                        "shape, blocks, method and tool: replaced)")
    parser.add_argument("--dry-run", action="store_true", help="check the options and print the plan only")
    parser.add_argument("--report", action="store_true", help="run nothing: print the JSON's rows as the tables "
                        "and as a Markdown table (for docs/bench_scale.md)")
    return parser.parse_args(argv)


def plan(args: argparse.Namespace) -> list[tuple[str, int, str]]:
    """``(shape, blocks, method)`` in run order."""
    out = []
    for shape in args.shapes:
        for method in args.methods:
            full = SHAPES[shape].layers
            blocks = full if shape in args.full_shapes else min(full, args.layers.get(method, full))
            out.append((shape, blocks, method))
    return out


def main(argv: list[str] | None = None) -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child" and argv is None:
        kind, job = sys.argv[2], json.loads(sys.argv[3])
        work = {"slimkit": slimkit_child, "peer": peer_child, "check": check_forward_child}[kind]
        print("RESULT " + json.dumps(work(job)), flush=True)
        return 0
    args = parse_args(argv)
    if args.report:
        data = json.loads(args.json.read_text())
        order = {name: i for i, name in enumerate([*SHAPES, *METHODS])}
        data["rows"].sort(key=lambda r: (order[r["shape"]], order[r["method"]], r["tool"] != "slimkit"))
        for row in data["rows"]:
            summarise(row)  # derived figures as this version computes them
        calibration = data["calibration"]
        print_tables(data["rows"], f"from {args.json}: calibration {calibration['calib_samples']} x "
                                   f"{calibration['calib_len']} tokens; budget {data['max_memory']}")
        print_markdown(data["rows"])
        return 0
    runs = plan(args)
    peer_ok = not args.no_peer and "1b" in args.shapes and Path(args.peer_python).is_file()
    print("plan: " + ", ".join(f"{s} {m} {b}/{SHAPES[s].layers} blocks" for s, b, m in runs)
          + ("; llm-compressor on 1b" if peer_ok else "; no llm-compressor"
             + ("" if args.no_peer or "1b" not in args.shapes else f" ({args.peer_python} missing: "
                "make .venv-bench/.installed)")), flush=True)
    if args.dry_run:
        return 0
    largest = {s: max(b for s2, b, _ in runs if s2 == s) for s in {s for s, _, _ in runs}}
    need = sum(needed_bytes(args.root, s, b) for s, b in largest.items())
    args.root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(args.root).free
    if need + 20 * GIB > free and need:
        print(f"bench/scale.py: {args.root} has {free / GIB:.0f} GiB free; the models need {need / GIB:.0f} GiB "
              "more and the outputs up to 20 GiB", file=sys.stderr)
        return 2
    rows: list[dict] = []
    if args.append and args.json.is_file():
        rows = json.loads(args.json.read_text())["rows"]
    logs = args.root / "logs"
    logs.mkdir(exist_ok=True)
    base = {"calib_samples": args.calib_samples, "calib_len": args.calib_len, "seed": args.seed,
            "threads": args.threads}
    checked: set[Path] = set()
    for shape_name, blocks, method in runs:
        shape = SHAPES[shape_name]
        folder = ensure_model(args.root, shape_name, blocks, say=lambda m: print(m, flush=True))
        if args.check_forward and folder not in checked:
            checked.add(folder)
            found = run_child("check", {**base, "model": str(folder)}, sys.executable, logs / "check.log")
            print(f"  {shape_name} {blocks} blocks forward: " + (found["error"] if "error" in found else
                  "finite, largest |h| per block " + " ".join(f"{x:.1f}" for x in found["largest"])), flush=True)
        tools = [("slimkit", sys.executable)]
        if peer_ok and shape_name == "1b":
            tools.append(("llm-compressor", args.peer_python))
        for tool, python in tools:
            tries = []
            for attempt in range(args.repeats):
                out = args.root / "out" / f"{shape_name}-{blocks}-{method}"
                job = {**base, "model": str(folder), "method": method, "out": str(out)}
                load = os.getloadavg()[0]
                result = run_child("slimkit" if tool == "slimkit" else "peer", job, python,
                                   logs / f"{shape_name}-{blocks}-{method}-{tool}-{attempt}.log")
                shutil.rmtree(out, ignore_errors=True)
                result.update(shape=shape_name, method=method, tool=tool, blocks=blocks, layers=shape.layers,
                              params=shape.params(), block_params=shape.block_params, load_before=load,
                              load_after=os.getloadavg()[0])
                summarise(result)
                tries.append(result)
                print(f"  {shape_name} {blocks}/{shape.layers} {method} {tool}: " + (
                    result["error"].splitlines()[0] if "error" in result else
                    f"peak {result['peak_rss'] / GIB:.2f} GiB, {result['total_s']:.1f} s, "
                    f"{fmt(result.get('s_per_block'), '.2f')} s/block (load {load:.2f})"), flush=True)
            good = [t for t in tries if "error" not in t]
            row = sorted(good, key=lambda t: t["total_s"])[len(good) // 2] if good else tries[0]
            row["repeats"] = len(tries)
            if len(good) > 1:
                row["total_s"] = statistics.median(t["total_s"] for t in good)
                row["peak_rss"] = statistics.median(t["peak_rss"] for t in good)
            key = (shape_name, blocks, method, tool)
            rows = [r for r in rows if (r["shape"], r["blocks"], r["method"], r["tool"]) != key] + [row]
            args.json.write_text(json.dumps({"calibration": base, "max_memory": MAX_MEMORY, "rows": rows}, indent=1))
    print_tables(rows, f"streamed, bf16, {args.threads} threads; calibration {args.calib_samples} x "
                       f"{args.calib_len} tokens (bf16 autocast); budget {MAX_MEMORY}")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
