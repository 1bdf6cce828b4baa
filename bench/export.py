"""SmolLM2-135M exported and scored where it is served: GGUF in llama.cpp, compressed-tensors in transformers.

GGUF, all rows scored by llama.cpp itself (the ``xllamacpp`` wheel, in process) on the same token
ids: the first ``--eval-windows`` x ``--eval-len`` windows of WikiText-2 raw *test*, tokenized by
slimkit's tokenizer as slimkit's ``perplexity`` evaluator cuts them, fed to llama.cpp as ids.
- slimkit rows: RTN, GPTQ and AWQ int4 symmetric group 32 written as Q4_0 (slimkit's codes and
  float16 scales as they are), RTN and GPTQ int4 asymmetric group 32 as Q4_1. GPTQ/AWQ calibrate on
  ``--calib-samples`` x ``--calib-len`` tokens of WikiText-2 *valid* (seed ``--seed``).
- reference rows: the same fp32 model written as F16 (unquantized) and as Q8_0, Q4_0, Q4_1 by the
  gguf exporter's ``requantize: true``, i.e. gguf-py's port of llama.cpp's reference quantizers
  (what ``llama-quantize`` does without an importance matrix).
- every row has the same token embedding (``--embedding``, Q8_0 by default, quantized from the same
  float table by the same quantizer; the head is tied), so sizes and perplexities differ only by the
  block projections.
Columns: llama.cpp perplexity; slimkit's own perplexity (its evaluator) of the slimkit model (of a
reference row: of the file loaded back with ``slimkit.load_model``) and the ratio of the two
(llama.cpp computes with 8-bit activations and an f16 KV cache, so they differ slightly); file
size; llama.cpp decode tokens/s at 1 and ``--threads`` threads (greedy, a 64-token prompt,
``--decode-tokens`` new tokens, median of ``--repeats``; all files are open at once and measured in
turn within every repeat, so load changes hit every row alike; "x ref" is the ratio to the
reference Q4_0 row); quantization time (slimkit's step; a reference row: its requantizing export)
and export time.

compressed-tensors: the symmetric slimkit models (and the asymmetric ones, through
``CompressedTensorsConfig(dequantize=True)``, the loading path that works for them in transformers
5.25) exported as compressed-tensors folders and the fp32 model as a float folder, each loaded by
plain ``AutoModelForCausalLM.from_pretrained``; perplexity through transformers on the same
windows, the largest per-token log-probability difference to slimkit's forward of the slimkit
model (expected 0: the codes are written as they are), folder size, and transformers decode
tokens/s beside the fp32 folder's (measured alternately). transformers decompresses the layers to
float ``nn.Linear``, so it runs them at float speed: the gain is in the serving runtimes.

SmolLM2's weights come from a Q4_1 GGUF (4-bit, blocks of 32): group 32 aligns with those blocks,
which flatters every 4-bit result (the reference Q4_1 all but reproduces the source). ``--model
stories260K`` runs the same rows on the bundled stories260K, whose weights are float as trained:
TinyStories valid cut in two, the first half calibrates, the second is scored; its ``down_proj``
(172 inputs, no group of 32) stays F16 in every row.

Usage: .venv/bin/python bench/export.py [--only ref-q4_0,gptq-q4_0] [--no-ct] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import torch  # noqa: E402
from pruning import add_data_options, fresh, num, smol_inputs  # noqa: E402

# bench/ (also sys.path[0] when run as a script) would let bench/kernels.py shadow the `kernels`
# package that transformers imports when it is installed
sys.path[:] = [p for p in sys.path if not p or Path(p).resolve() != BENCH]

PROMPT_TOKENS = 64
REFERENCE = "ref-q4_0"


@dataclass
class Spec:
    key: str
    label: str
    gguf: str  # the GGUF type of the block projections
    method: str | None = None  # slimkit quantizer; None: a reference row (the fp32 model, requantized)
    symmetric: bool = True
    calib: bool = False


SPECS = [
    Spec("ref-f16", "fp32 model as F16", "F16"),
    Spec("ref-q8_0", "reference Q8_0", "Q8_0"),
    Spec(REFERENCE, "reference Q4_0", "Q4_0"),
    Spec("ref-q4_1", "reference Q4_1", "Q4_1"),
    Spec("rtn-q4_0", "slimkit RTN int4 g32", "Q4_0", "rtn"),
    Spec("gptq-q4_0", "slimkit GPTQ int4 g32", "Q4_0", "gptq", calib=True),
    Spec("awq-q4_0", "slimkit AWQ int4 g32", "Q4_0", "awq", calib=True),
    Spec("rtn-asym-q4_1", "slimkit RTN int4 asym g32", "Q4_1", "rtn", symmetric=False),
    Spec("gptq-asym-q4_1", "slimkit GPTQ int4 asym g32", "Q4_1", "gptq", symmetric=False, calib=True),
]


@dataclass
class Row:
    spec: Spec
    gguf: Path | None = None
    ct: Path | None = None  # compressed-tensors folder (slimkit rows and the fp32 model)
    size: int | None = None
    ct_size: int | None = None
    quant_s: float | None = None
    export_s: float | None = None
    slimkit_ppl: float | None = None
    llama_ppl: float | None = None
    tok_s: dict[int, list[float]] = field(default_factory=dict)
    logprobs: torch.Tensor | None = None  # slimkit's per-token log-probabilities [windows, len - 1]
    hf: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # quantizing, scoring or exporting failed
    llama_error: str | None = None  # llama.cpp failed on the file


def median(values: list[float] | None) -> float | None:
    return statistics.median(values) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def token_logprobs(net: torch.nn.Module, windows: torch.Tensor) -> torch.Tensor:
    """log p(next token) at every position of every window, each window its own forward pass (as
    slimkit's evaluator runs them)."""
    out = []
    with torch.inference_mode():
        for window in windows:
            logits = net(input_ids=window[None], use_cache=False).logits[0, :-1].float()
            out.append(torch.log_softmax(logits, dim=-1).gather(1, window[1:, None])[:, 0])
    return torch.stack(out)


def hf_decode(net: torch.nn.Module, prompt: torch.Tensor, n: int) -> float:
    """Greedy decode tokens/s of a transformers model: the prompt's prefill is not timed."""
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers 5.25 renames past_key_values
        out = net(input_ids=prompt[None], use_cache=True, logits_to_keep=1)
        started = time.perf_counter()
        for _ in range(n):
            token = out.logits[:, -1:].argmax(dim=-1)
            out = net(input_ids=token, past_key_values=out.past_key_values, use_cache=True)
        return n / (time.perf_counter() - started)


def quiet():
    return contextlib.redirect_stderr(open(os.devnull, "w"))  # noqa: SIM115 - progress bars


def stories_inputs(assets: Path, work: Path) -> tuple[str, Path, Path] | None:
    """``(model, calibration text, evaluation text)`` for the bundled stories260K: TinyStories valid
    (blank lines collapsed, as llama2.c trained on it) cut in two at a line, the first half for
    calibration, the second for evaluation; ``None`` (said on stderr) when the text is absent."""
    path = assets / "tinystories" / "tinystories-valid-head.txt"
    if not path.is_file():
        print(f"needs {path} (../shared/assets)", file=sys.stderr)
        return None
    text = path.read_text().replace("\n\n", "\n")
    cut = text.index("\n", len(text) // 2) + 1
    (work / "calibration.txt").write_text(text[:cut])
    (work / "evaluation.txt").write_text(text[cut:])
    return "example:stories260K", work / "calibration.txt", work / "evaluation.txt"


def build_rows(args, specs: list[Spec], inputs, host, work: Path, dense, windows: torch.Tensor
               ) -> tuple[list[Row], Row]:
    """Quantize, score with slimkit and export every row; returns the rows and the fp32 row
    (compressed-tensors only). ``dense`` is the fp32 model, left as it is."""
    from slimkit import export_model, load_model, run_recipe, save_model
    from slimkit.core.recipe import Recipe

    source, valid, test = inputs
    eval_params = {"text": str(test), "seq_len": args.eval_len, "max_windows": args.eval_windows}
    folder = work / "fp32"
    save_model(dense, folder, {})
    base = Row(Spec("fp32", "fp32 model", "F32"))
    base.slimkit_ppl = host.evaluate("perplexity", dense, params=eval_params)["perplexity"]
    base.logprobs = token_logprobs(dense.model, windows)
    print(f"fp32 model: slimkit ppl {base.slimkit_ppl:.3f}", flush=True)
    gguf_common = {"embedding": args.embedding}
    if args.model == "smollm2":
        gguf_common["tokenizer"] = str(source)  # its own vocabulary, copied from the source GGUF

    def export(row: Row, model, params: dict[str, Any]) -> None:
        started = time.perf_counter()
        result = export_model(model, work / f"{row.spec.key}.gguf", format="gguf", params={**gguf_common, **params},
                              host=host, catalogue=False)
        row.export_s, row.gguf, row.size = time.perf_counter() - started, result.path, result.size_bytes
        if result.details.get("file_type") not in (None, row.spec.gguf):
            raise RuntimeError(f"expected a {row.spec.gguf} file, got {result.summary.description}")

    def export_ct(row: Row, model) -> None:
        result = export_model(model, work / f"{row.spec.key}-ct", format="compressed-tensors", host=host,
                              catalogue=False)
        row.ct, row.ct_size = result.path, result.size_bytes

    if not args.no_ct:
        export_ct(base, dense)
    rows = []
    for spec in specs:
        row = Row(spec)
        try:
            if spec.method is None:
                params: dict[str, Any] = {"weights": spec.gguf}
                if spec.gguf not in ("F16", "F32"):
                    params["requantize"] = True
                export(row, dense, params)
                row.quant_s = row.export_s if params.get("requantize") else None
                with quiet():
                    back = load_model(row.gguf)  # the file's weights, dequantized by slimkit's GGUF loader
                row.slimkit_ppl = host.evaluate("perplexity", back, params=eval_params)["perplexity"]
                del back
            else:
                step = {"method": f"quantize.{spec.method}",
                        "params": {"bits": 4, "group_size": 32, "symmetric": spec.symmetric}}
                if args.model == "stories260K":  # down_proj's 172 inputs hold no group of 32: float, as in ref rows
                    step["params"]["roles"] = ["q", "k", "v", "o", "gate", "up"]
                data: dict[str, Any] = {"name": spec.key, "steps": [step]}
                if spec.calib:
                    data["calibration"] = {"text": str(valid), "n_samples": args.calib_samples,
                                           "seq_len": args.calib_len, "seed": args.seed,
                                           "precision": args.precision}
                result = run_recipe(Recipe.from_data(data), fresh(folder), catalogue=False, inplace=True, host=host)
                model, row.quant_s = result.model, result.compression_seconds
                row.slimkit_ppl = host.evaluate("perplexity", model, params=eval_params)["perplexity"]
                row.logprobs = token_logprobs(model.model, windows)
                export(row, model, {"weights": "auto"})
                if not args.no_ct:
                    export_ct(row, model)
                del result, model
        except Exception as error:  # keep the other rows going
            row.error = f"{type(error).__name__}: {error}"[:300]
        gc.collect()
        rows.append(row)
        print(f"  {spec.key}: slimkit ppl {num(row.slimkit_ppl, '.3f')}, quant {num(row.quant_s, '.1f')} s, "
              f"export {num(row.export_s, '.1f')} s, {num(row.size and row.size / 2**20, '.1f')} MiB"
              + (f"  ERROR {row.error}" if row.error else ""), flush=True)
    return rows, base


def run_llamacpp(args, rows: list[Row], windows: torch.Tensor, prompt: list[int], threads: list[int]) -> None:
    """Perplexity of every file in llama.cpp, then decode speed, all files measured in turn."""
    from slimkit.plugins.export.gguf.runtime import LlamaCpp, perplexity

    n_ctx = max(512, args.eval_len, PROMPT_TOKENS + args.decode_tokens + 8)
    ready = [row for row in rows if row.gguf is not None and row.error is None]
    for row in ready:
        try:
            with LlamaCpp(row.gguf, n_ctx=n_ctx, threads=args.threads) as runner:
                row.llama_ppl = perplexity(runner, windows.tolist())["perplexity"]
        except Exception as error:
            row.llama_error = f"{type(error).__name__}: {error}"[:300]
        print(f"  {row.spec.key}: llama.cpp ppl {num(row.llama_ppl, '.3f')}"
              + (f"  ERROR {row.llama_error}" if row.llama_error else ""), flush=True)
    ready = [row for row in ready if row.llama_error is None]
    for t in threads:
        runners = [LlamaCpp(row.gguf, n_ctx=n_ctx, threads=t) for row in ready]
        try:
            for runner in runners:  # warm-up: page the weights in, start the thread pool
                runner.decode_speed(prompt, 8)
            for _ in range(args.repeats):
                for row, runner in zip(ready, runners):
                    row.tok_s.setdefault(t, []).append(runner.decode_speed(prompt, args.decode_tokens))
        finally:
            for runner in runners:
                runner.close()
        print(f"  decode at {t} thread(s) measured; load {os.getloadavg()[0]:.2f}", flush=True)


def run_transformers(args, rows: list[Row], base: Row, windows: torch.Tensor) -> None:
    """Each compressed-tensors folder through plain transformers, decode alternating with fp32's."""
    import transformers
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    transformers.utils.logging.set_verbosity_error()
    prompt = windows[0, :PROMPT_TOKENS]

    def load(row: Row):
        kwargs = {} if row.spec.symmetric else {"quantization_config": CompressedTensorsConfig(dequantize=True)}
        started = time.perf_counter()
        with quiet():
            net = AutoModelForCausalLM.from_pretrained(row.ct, **kwargs).eval()
        row.hf["load_s"] = time.perf_counter() - started
        row.hf["path"] = "dequantize=True" if kwargs else "plain"
        return net

    def score(row: Row, net) -> None:
        logprobs = token_logprobs(net, windows)
        row.hf["ppl"] = math.exp(-float(logprobs.double().mean()))
        row.hf["max_dlogp"] = float((logprobs - row.logprobs).abs().max())

    dense = load(base)
    score(base, dense)
    for row in [r for r in rows if r.ct is not None and r.error is None]:
        try:
            net = load(row)
            score(row, net)
            for t in (args.hf_threads if args.model == "smollm2" else []):  # as llama.cpp decode
                torch.set_num_threads(t)
                hf_decode(net, prompt, 4)
                hf_decode(dense, prompt, 4)
                for _ in range(args.repeats):  # alternate: load changes hit both alike
                    row.hf.setdefault("tok_s", {}).setdefault(t, []).append(hf_decode(net, prompt, args.decode_tokens))
                    row.hf.setdefault("fp32_tok_s", {}).setdefault(t, []).append(
                        hf_decode(dense, prompt, args.decode_tokens))
            torch.set_num_threads(args.threads)
            del net
        except Exception as error:
            row.hf["error"] = f"{type(error).__name__}: {error}"[:300]
        gc.collect()
        print(f"  {row.spec.key}: transformers ppl {num(row.hf.get('ppl'), '.3f')}, max |d log p| "
              f"{num(row.hf.get('max_dlogp'), '.2e')}" + (f"  ERROR {row.hf['error']}" if 'error' in row.hf else ""),
              flush=True)


def report(args, rows: list[Row], base: Row, threads: list[int]) -> tuple[list[str], list[str]]:
    """Print both tables and the targets; returns (met, missed)."""
    by_key = {row.spec.key: row for row in rows}
    ref = by_key.get(REFERENCE)
    ref_tok = {t: median(ref.tok_s.get(t)) for t in threads} if ref else {}
    t_hi = threads[-1] if threads else 2
    test, valid = (("WikiText-2 raw test", "WikiText-2 valid") if args.model == "smollm2" else
                   ("TinyStories valid 2nd half", "TinyStories valid 1st half"))
    print(f"\n{args.model} GGUF in llama.cpp (xllamacpp): {test} {args.eval_windows}x{args.eval_len} tokens (slimkit's "
          f"tokenizer, ids fed to llama.cpp); embedding {args.embedding} in every row (tied head); calibration "
          f"{valid} {args.calib_samples}x{args.calib_len} seed {args.seed} ({args.precision}); decode: "
          f"{PROMPT_TOKENS}-token prompt + {args.decode_tokens} new, median of {args.repeats}, all rows in turn; "
          f"x ref = vs {REFERENCE}; fp32 model slimkit ppl {num(base.slimkit_ppl, '.3f')}")
    if args.model == "smollm2":
        print("note: SmolLM2's weights come from a Q4_1 GGUF (blocks of 32); group 32 aligns with them, which "
              "flatters every 4-bit row (reference Q4_1 all but reproduces the source)")
    else:
        print("note: stories260K (float weights as trained); down_proj (172 inputs) is F16 in every row")
    header = (f"{'row':<16}{'what':<28}{'type':<6}{'ppl llama.cpp':>14}{'ppl slimkit':>12}{'ratio':>7}{'MiB':>7}"
              f"{'tok/s 1t':>9}{'x ref':>6}{f'tok/s {t_hi}t':>9}{'x ref':>6}{'quant s':>8}{'export s':>9}")
    print(header)
    print("-" * len(header))
    for row in rows:
        tok = {t: median(row.tok_s.get(t)) for t in {1, t_hi}}
        print(f"{row.spec.key:<16}{row.spec.label:<28}{row.spec.gguf:<6}{num(row.llama_ppl, '.3f'):>14}"
              f"{num(row.slimkit_ppl, '.3f'):>12}{num(ratio(row.llama_ppl, row.slimkit_ppl), '.4f'):>7}"
              f"{num(row.size and row.size / 2**20, '.1f'):>7}{num(tok[1], '.1f'):>9}"
              f"{num(ratio(tok[1], ref_tok.get(1)), '.2f'):>6}{num(tok[t_hi], '.1f'):>9}"
              f"{num(ratio(tok[t_hi], ref_tok.get(t_hi)), '.2f'):>6}{num(row.quant_s, '.1f'):>8}"
              f"{num(row.export_s, '.1f'):>9}")
        for error in (row.error, row.llama_error):
            if error:
                print(f"    ERROR {error}")
    ct_rows = [r for r in [base, *rows] if r.ct is not None]
    if ct_rows:
        hf_threads = args.hf_threads
        print(f"\ncompressed-tensors through transformers {__import__('transformers').__version__}: layers "
              f"decompressed to float nn.Linear (float speed; plain: at the first forward, not in load s); ppl on "
              f"the same windows; max |d log p| vs slimkit's forward of the same model; decode {PROMPT_TOKENS}-token "
              f"prompt + {args.decode_tokens} new, median of {args.repeats}, alternating with the fp32 folder (its "
              f"row: all its measurements)")
        header = (f"{'row':<16}{'load path':<17}{'ppl transformers':>17}{'ppl slimkit':>12}{'max |d log p|':>14}"
                  f"{'MiB':>7}{'load s':>7}" + "".join(f"{f'tok/s {t}t':>9}{'x fp32':>7}" for t in hf_threads))
        print(header)
        print("-" * len(header))
        pooled = {t: [v for r in ct_rows for v in r.hf.get("fp32_tok_s", {}).get(t, [])] for t in hf_threads}
        for row in ct_rows:
            hf = row.hf
            mine = pooled if row is base else hf.get("tok_s", {})
            dense = pooled if row is base else hf.get("fp32_tok_s", {})
            print(f"{row.spec.key:<16}{hf.get('path', '-'):<17}{num(hf.get('ppl'), '.3f'):>17}"
                  f"{num(row.slimkit_ppl, '.3f'):>12}{num(hf.get('max_dlogp'), '.1e'):>14}"
                  f"{num(row.ct_size and row.ct_size / 2**20, '.1f'):>7}{num(hf.get('load_s'), '.1f'):>7}"
                  + "".join(f"{num(median(mine.get(t)), '.1f'):>9}"
                            f"{num(ratio(median(mine.get(t)), median(dense.get(t))), '.2f'):>7}" for t in hf_threads))
            if "error" in hf:
                print(f"    ERROR {hf['error']}")

    met, missed = [], []

    def target(ok: bool, text: str) -> None:
        (met if ok else missed).append(text)

    if ref is not None and ref.llama_ppl is not None:
        for row in rows:
            if row.spec.calib and row.spec.gguf == "Q4_0" and row.llama_ppl is not None:
                bound = (1 - args.margin) * ref.llama_ppl
                target(row.llama_ppl <= bound, f"{row.spec.key} llama.cpp ppl {row.llama_ppl:.3f} <= {bound:.3f} "
                                               f"({args.margin:.0%} below reference Q4_0's {ref.llama_ppl:.3f})")
                size_r = row.size / ref.size
                target(abs(size_r - 1) <= 0.01, f"{row.spec.key} file {size_r:.4f}x reference Q4_0's (within 1%)")
                for t in threads:
                    r = ratio(median(row.tok_s.get(t)), ref_tok.get(t))
                    if r is not None:
                        target(abs(r - 1) <= args.speed_tolerance,
                               f"{row.spec.key} decode {t}t {r:.3f}x reference Q4_0's "
                               f"(within {args.speed_tolerance:.0%})")
    for row in rows:
        r = ratio(row.llama_ppl, row.slimkit_ppl)
        if row.spec.method is not None and r is not None:
            target(abs(r - 1) <= 0.02, f"{row.spec.key} llama.cpp/slimkit ppl {r:.4f} (within 2%)")
    for row in ct_rows:
        if "max_dlogp" in row.hf:
            target(row.hf["max_dlogp"] <= args.ct_tolerance,
                   f"{row.spec.key} compressed-tensors in transformers: max |d log p| {row.hf['max_dlogp']:.1e} <= "
                   f"{args.ct_tolerance:.0e}")
    for text in met:
        print(f"  met:    {text}")
    for text in missed:
        print(f"  MISSED: {text}")
    return met, missed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("smollm2", "stories260K"), default="smollm2",
                        help="SmolLM2-135M on WikiText-2 (default), or the bundled stories260K, whose weights are "
                        "float as trained, on TinyStories valid (first half calibrates, second half evaluates)")
    parser.add_argument("--threads", type=int, default=2, help="threads everywhere; decode also at 1 (default 2)")
    add_data_options(parser, "the reference rows have no calibration")
    parser.set_defaults(calib_samples=32, eval_windows=8, eval_len=256)
    parser.add_argument("--embedding", default="Q8_0", choices=("Q8_0", "Q4_0", "F16", "F32"),
                        help="token embedding type of every GGUF row (default Q8_0)")
    parser.add_argument("--decode-tokens", type=int, default=64, help="new tokens per decode measurement (default 64)")
    parser.add_argument("--repeats", type=int, default=5, help="decode measurements per row and thread count "
                        "(default 5; the median is reported)")
    parser.add_argument("--hf-threads", type=lambda text: sorted({int(t) for t in text.split(",")}), default=[1],
                        help="thread counts of the transformers decode measurements, comma-separated (default 1: "
                        "torch's 2-thread decode collapses when the 2 cores are shared)")
    parser.add_argument("--margin", type=float, default=0.02, help="'clearly better': calibrated Q4_0 ppl at least "
                        "this fraction below the reference Q4_0's (default 0.02)")
    parser.add_argument("--speed-tolerance", type=float, default=0.10, help="'equal decode speed': within this "
                        "fraction of the reference Q4_0's (default 0.10)")
    parser.add_argument("--ct-tolerance", type=float, default=1e-5, help="largest |log p difference| of "
                        "transformers vs slimkit allowed (default 1e-5)")
    parser.add_argument("--only", default=None, help="comma-separated row keys (default: all; "
                        f"{', '.join(s.key for s in SPECS)})")
    parser.add_argument("--no-ct", action="store_true", help="skip the compressed-tensors part")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.epilog = (f"Data defaults: calibration {parser.get_default('calib_samples')}x"
                     f"{parser.get_default('calib_len')} tokens of WikiText-2 valid (seed 0, float32); evaluation "
                     f"the first {parser.get_default('eval_windows')}x{parser.get_default('eval_len')} tokens of "
                     "WikiText-2 raw test (llama.cpp scores ~50 tokens/s here, about 40 s a row); the default run "
                     "takes 15-30 minutes on 2 shared cores.")
    args = parser.parse_args()
    specs = SPECS
    if args.only:
        wanted = set(args.only.split(","))
        if wanted - {s.key for s in SPECS}:
            print(f"unknown rows {sorted(wanted - {s.key for s in SPECS})}; known: {[s.key for s in SPECS]}",
                  file=sys.stderr)
            return 2
        specs = [s for s in SPECS if s.key in wanted]
    for module in ("xllamacpp", "gguf") + (() if args.no_ct else ("compressed_tensors",)):
        try:
            __import__(module)
        except ImportError:
            print(f"needs {module} (pip install 'slimkit[test]'; or --no-ct without compressed-tensors)",
                  file=sys.stderr)
            return 2
    torch.set_num_threads(args.threads)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    from slimkit import TextSource, load_model, make_host, tokenize

    started = time.perf_counter()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        inputs = smol_inputs(args.assets) if args.model == "smollm2" else stories_inputs(args.assets, Path(tmp))
        if inputs is None:
            return 2
        print(f"load average at start {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}; CPU capability "
              f"{torch.backends.cpu.get_cpu_capability()}, {args.threads} threads", flush=True)
        host = make_host(load_entrypoints=False)
        with quiet():
            dense = load_model(inputs[0])
        ids = tokenize(dense.tokenizer, TextSource(inputs[2]).text())  # as the perplexity evaluator cuts them
        count = min(args.eval_windows, ids.numel() // args.eval_len)
        windows = ids[: count * args.eval_len].view(count, args.eval_len)
        prompt = windows[0, :PROMPT_TOKENS].tolist()
        # a 260K-parameter model decodes in a fraction of a millisecond a token: what is timed there is the
        # server's overhead and the other open files' spinning threads, not the format
        threads = sorted({1, args.threads}) if args.model == "smollm2" else []
        rows, base = build_rows(args, specs, inputs, host, Path(tmp), dense, windows)
        del dense
        print("llama.cpp:", flush=True)
        run_llamacpp(args, rows, windows, prompt, threads)
        if not args.no_ct:
            print("transformers:", flush=True)
            run_transformers(args, rows, base, windows)
        met, missed = report(args, rows, base, threads)
    load = os.getloadavg()
    failed = [row.spec.key for row in rows if row.error or row.llama_error or "error" in row.hf]
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (at start {load_start[0]:.2f}); "
          f"total {time.perf_counter() - started:.0f} s")
    print("targets: " + ("all met" if not missed else f"{len(missed)} missed")
          + (f"; rows failed: {', '.join(failed)}" if failed else ""))
    if args.json:
        args.json.write_text(json.dumps({
            "args": {k: str(v) for k, v in vars(args).items()}, "load_start": load_start, "load": load,
            "met": met, "missed": missed, "fp32": {"slimkit_ppl": base.slimkit_ppl, "ct_size": base.ct_size,
                                                   "transformers": base.hf},
            "rows": [{"key": r.spec.key, "type": r.spec.gguf, "llama_ppl": r.llama_ppl, "slimkit_ppl": r.slimkit_ppl,
                      "size": r.size, "tok_s": r.tok_s, "quant_s": r.quant_s, "export_s": r.export_s,
                      "ct_size": r.ct_size, "transformers": r.hf, "error": r.error, "llama_error": r.llama_error}
                     for r in rows]},
            indent=2, default=str))
    return 0 if not missed and not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
