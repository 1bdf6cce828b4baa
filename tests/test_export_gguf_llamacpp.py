"""Check 2: exported GGUF files run in real llama.cpp (the ``xllamacpp`` wheel) and agree with slimkit.

On the same windows, llama.cpp's teacher-forced log-probabilities and perplexity are compared
with slimkit's own forward and its ``perplexity`` evaluator. llama.cpp multiplies with 8-bit
activations and an f16 KV cache, so the checks are ratios: perplexity within 2%, mean per-token
|log-prob difference| below 0.1 nats, llama.cpp's most likely next token the same as slimkit's
at >= 90% of positions (95.7-99.6% seen), and greedy decoding equal until the first place
slimkit itself sees a near-tie (top two logits within 0.25), if there is one. Figures are printed (``pytest -s``); the
ones measured here are in docs/export_gguf.md.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

import slimkit
from slimkit import TextSource, example_text, export_model, make_host, tokenize

pytestmark = pytest.mark.slow
pytest.importorskip("gguf")
pytest.importorskip("xllamacpp", reason="llama.cpp checks need xllamacpp (pip install 'slimkit[test]')")

from slimkit.plugins.export.gguf.runtime import LlamaCpp, perplexity  # noqa: E402

NOT_DOWN = ["q", "k", "v", "o", "gate", "up"]
WINDOW = 128
NEAR_TIE = 0.25


@pytest.fixture
def host():
    return make_host(load_entrypoints=False)


def compress(host, model, method, params, calibration=None):
    info = host.compressors.get(method)
    ctx = host.context(calibration=calibration)
    info.create().compress_(model, host.adapter_for(model), host.config(info, params), ctx)
    return model


def dense_twin(model):
    """A float copy with slimkit's dequantized weights: the numbers slimkit's evaluator computes
    (its quantized layers dequantize for calls of more than 16 rows), without dequantizing again
    at every call (greedy decoding of SmolLM2 took 3 minutes that way)."""
    return slimkit.to_dense(copy.deepcopy(model.model)).eval()


def slimkit_scores(net, windows):
    with torch.inference_mode():
        logits = net(input_ids=windows, use_cache=False).logits.float()
    logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
    return logprobs.gather(2, windows[:, 1:, None])[..., 0], logits[:, :-1].argmax(dim=-1)


def slimkit_greedy(net, prompt, n):
    """Greedy tokens and, at each step, the margin between the top two logits."""
    ids, tokens, margins = list(prompt), [], []
    with torch.inference_mode():
        for _ in range(n):
            logits = net(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1].float()
            top = torch.topk(logits, 2)
            tokens.append(int(top.indices[0]))
            margins.append(float(top.values[0] - top.values[1]))
            ids.append(tokens[-1])
    return tokens, margins


def agreement(host, model, path, windows, evaluator_params=None, n_greedy=32):
    """Compare llama.cpp on ``path`` with slimkit on ``windows``; returns the figures."""
    reference = dense_twin(model)
    mine, my_top = slimkit_scores(reference, windows)
    if evaluator_params is not None:  # slimkit's evaluator, on the quantized model, scores these very windows
        info = host.evaluators.get("perplexity")
        reported = info.create().evaluate(model, host.config(info, evaluator_params), host.context())
        assert reported["perplexity"] == pytest.approx(math.exp(-float(mine.double().mean())), rel=1e-5)
    prompt = windows[0, :16].tolist()
    with LlamaCpp(path, n_ctx=2 * WINDOW) as runner:
        theirs = perplexity(runner, windows.tolist())
        greedy = runner.greedy(prompt, n_greedy)
    logprobs = torch.tensor(theirs["logprobs"])
    expected, margins = slimkit_greedy(reference, prompt, n_greedy)
    first = next((i for i, (a, b) in enumerate(zip(greedy, expected)) if a != b), n_greedy)
    figures = {
        "ppl_slimkit": math.exp(-float(mine.double().mean())), "ppl_llama_cpp": theirs["perplexity"],
        "ppl_ratio": theirs["perplexity"] / math.exp(-float(mine.double().mean())),
        "mean_abs_dlogp": float((logprobs - mine).abs().mean()), "max_abs_dlogp": float((logprobs - mine).abs().max()),
        "top1_agreement": float((torch.tensor(theirs["top"]) == my_top).float().mean()),
        "greedy_equal_prefix": first, "greedy_n": n_greedy,
        "greedy_margin_at_split": margins[first] if first < n_greedy else None,
    }
    print(f"\n{path.name}: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                       for k, v in figures.items()))
    assert abs(figures["ppl_ratio"] - 1) < 0.02, figures
    assert figures["mean_abs_dlogp"] < 0.1, figures
    assert figures["top1_agreement"] >= 0.9, figures
    assert first == n_greedy or margins[first] < NEAR_TIE, figures  # equal until slimkit's own near-tie
    return figures


def story_windows(model, count=4):
    ids = tokenize(model.tokenizer, TextSource(example_text()).text())
    return ids[: count * WINDOW].view(count, WINDOW)


STORY_EVALUATOR = {"seq_len": WINDOW, "max_windows": 4, "batch_size": 4}


@pytest.mark.parametrize("method, params, export_params", [
    ("quantize.rtn", {"bits": 4, "group_size": 32, "roles": NOT_DOWN}, {}),
    ("quantize.gptq", {"bits": 4, "group_size": 32, "roles": NOT_DOWN}, {}),
    ("quantize.rtn", {"bits": 8, "group_size": None, "roles": NOT_DOWN, "embeddings": "int8"}, {}),
    ("quantize.rtn", {"bits": 4, "group_size": 32, "symmetric": False, "roles": NOT_DOWN}, {}),
    ("quantize.rtn", {"bits": 4, "group_size": 32, "roles": ["q", "k", "v"]}, {"requantize": True}),
], ids=["rtn-q4_0", "gptq-q4_0", "rtn-q8_0-emb", "rtn-asym-q4_1", "requantized-q4_0"])
def test_stories260k_in_llama_cpp_agrees_with_slimkit(host, model, calibration, tmp_path, method, params,
                                                       export_params):
    compress(host, model, method, params, calibration if method == "quantize.gptq" else None)
    result = export_model(model, tmp_path / "m.gguf", format="gguf", host=host, params=export_params)
    if export_params.get("requantize"):  # slimkit measured float layers; the file holds gguf's rounding
        return _requantized_close(host, model, result.path)
    agreement(host, model, result.path, story_windows(model), STORY_EVALUATOR)


def _requantized_close(host, model, path):
    """A re-quantized file is not what slimkit measured; it must still run, near the float model."""
    windows = story_windows(model)
    mine, _ = slimkit_scores(model.model, windows)
    with LlamaCpp(path, n_ctx=2 * WINDOW) as runner:
        theirs = perplexity(runner, windows.tolist())
    ratio = theirs["perplexity"] / math.exp(-float(mine.double().mean()))
    print(f"\nrequantized: ppl ratio to slimkit's (unrequantized) model {ratio:.4f}")
    assert 0.9 < ratio < 1.5


def test_deci_export_of_per_block_pruning_loads_and_agrees(host, model, tmp_path):
    from slimkit.plugins.pruning.structured import shrink_attention_, shrink_mlp_

    layout = host.adapter_for(model).layout(model.model)
    for block in layout.blocks:  # structured pruning that differs per block: MLP 172..124, block 1 3 KV heads
        shrink_mlp_(block.mlp, torch.arange(172 - 12 * block.index))
    shrink_attention_(layout.blocks[1].attention, torch.tensor([0, 2, 3]))
    compress(host, model, "quantize.rtn", {"bits": 4, "group_size": 32, "roles": ["q", "k", "v", "gate", "up"]})
    result = export_model(model, tmp_path / "deci.gguf", format="gguf", host=host)
    assert result.summary.details["architecture"] == "deci"
    agreement(host, model, result.path, story_windows(model), STORY_EVALUATOR)


def test_converted_sentencepiece_tokenizer_tokenizes_as_slimkit(host, model, tmp_path):
    result = export_model(model, tmp_path / "m.gguf", format="gguf", host=host)
    text = TextSource(example_text()).text()[:3000]
    with LlamaCpp(result.path) as runner:
        assert runner.tokenize(text) == model.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert runner.tokenize(text, add_special=True)[0] == model.tokenizer.bos_token_id


# -- SmolLM2-135M: a real model, its base loaded from llama.cpp's own GGUF --------------------------------


@pytest.fixture(scope="module")
def smollm2(assets):
    source = assets / "smollm2-135m-instruct-q4_1" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not source.is_file():
        pytest.skip(f"{source} is absent")
    host = make_host(load_entrypoints=False)
    model = compress(host, slimkit.load_model(source), "quantize.rtn", {"bits": 4, "group_size": 32})
    return host, model, source


@pytest.mark.assets
def test_smollm2_rtn_q4_0_in_llama_cpp_agrees_with_slimkit(smollm2, assets, tmp_path):
    host, model, source = smollm2
    result = export_model(model, tmp_path / "smol.gguf", format="gguf", host=host)
    assert result.summary.details["tensors"]["Q4_0 codes"] == 210
    assert result.summary.details["tokenizer"] == f"copied from {source.name}"
    wikitext = tmp_path / "wikitext-2-test-head.txt"  # its first 20k characters: two windows need ~600
    wikitext.write_text((assets / "wikitext-2" / "wikitext-2-raw-test.txt").read_text()[:20000])
    text = TextSource(wikitext).text()
    ids = tokenize(model.tokenizer, text)
    figures = agreement(host, model, result.path, ids[: 2 * WINDOW].view(2, WINDOW),
                        {"text": str(wikitext), "seq_len": WINDOW, "max_windows": 2, "batch_size": 2})
    with LlamaCpp(result.path) as runner:
        assert runner.tokenize(text[:4000]) == model.tokenizer(text[:4000], add_special_tokens=False)["input_ids"]
        figures["decode_tokens_per_s_1_thread"] = runner.decode_speed(ids[:16].tolist(), 32)
    print(f"decode: {figures['decode_tokens_per_s_1_thread']:.1f} tokens/s (1 thread)")


@pytest.mark.assets
def test_smollm2_converted_bpe_tokenizer_tokenizes_as_hugging_face(smollm2, assets, tmp_path):
    from transformers import AutoTokenizer

    host, model, _ = smollm2
    tokenizer = AutoTokenizer.from_pretrained(assets / "smollm2-135m-instruct-q4_1" / "tokenizer")
    converted = slimkit.LoadedModel(model.model, tokenizer, "smollm2-hf-tokenizer")
    result = export_model(converted, tmp_path / "hf.gguf", format="gguf", host=host, params={"tokenizer": "hf"})
    assert result.summary.details["tokenizer"].startswith("converted from the Hugging Face tokenizer (gpt2, pre gpt-2)")
    text = (assets / "wikitext-2" / "wikitext-2-raw-test.txt").read_text()[:8000]
    with LlamaCpp(result.path) as runner:
        assert runner.tokenize(text) == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_tokens_that_end_inside_a_character_are_scored_too(host, model, tmp_path):
    """llama.cpp's server withholds the probabilities of a token that ends inside a UTF-8 character
    (stories260K spells these as byte-fallback pieces); they are read from the whole distribution,
    and must match slimkit's at exactly those positions."""
    result = export_model(model, tmp_path / "m.gguf", format="gguf", host=host)
    text = "Tom said: café, naïve — 日本 ☕ ünd 😀! " + TextSource(example_text()).text()[:400]
    ids = tokenize(model.tokenizer, text)[:WINDOW]
    pieces = model.tokenizer.convert_ids_to_tokens(ids.tolist())
    partial = [t for t in range(1, len(ids)) if pieces[t].startswith("<0x") and pieces[t] != "<0x0A>"]
    assert len(partial) >= 8, pieces  # the text really has byte pieces
    mine, _ = slimkit_scores(model.model, ids[None])
    with LlamaCpp(result.path, n_ctx=2 * WINDOW) as runner:
        theirs = torch.tensor(runner.logprobs(ids.tolist()))
    diff = (theirs - mine[0]).abs()
    at_partial = diff[[t - 1 for t in partial]]
    print(f"\n{len(partial)} byte pieces: mean |d log p| {float(at_partial.mean()):.4f} (elsewhere "
          f"{float(diff.mean()):.4f}), max {float(at_partial.max()):.4f}")
    assert float(at_partial.mean()) < 0.1 and float(at_partial.max()) < 0.5
