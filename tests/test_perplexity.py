"""The perplexity evaluator against an independent computation and a published figure."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from slimkit import load_model
from slimkit.core.data import TextSource, tokenize
from slimkit.core.errors import ConfigError, DataError
from slimkit.core.model_io import example_text


@pytest.fixture(scope="module")
def model():
    return load_model("example:stories260K")


def reference_perplexity(model, windows: torch.Tensor) -> float:
    """Token by token, in float64, re-running the growing prefix: no batching, no shifting trick."""
    double = copy.deepcopy(model.model).double().eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for window in windows:
            for t in range(1, window.numel()):
                logits = double(input_ids=window[:t].unsqueeze(0), use_cache=False).logits[0, -1]
                total -= float(torch.log_softmax(logits, dim=-1)[window[t]])
                count += 1
    return math.exp(total / count)


def test_matches_independent_float64_computation(host, model, tmp_path):
    text = example_text().read_text()[:20000]
    file = tmp_path / "sample.txt"
    file.write_text(text)
    params = {"text": str(file), "seq_len": 48, "max_windows": 3, "add_bos": True}
    metrics = host.evaluate("perplexity", model, params=params)
    ids = tokenize(model.tokenizer, TextSource(file).text(), add_bos=True)
    windows = ids[: 3 * 48].view(3, 48)
    expected = reference_perplexity(model, windows)
    assert metrics["windows"] == 3 and metrics["tokens"] == 3 * 47
    assert metrics["perplexity"] == pytest.approx(expected, rel=1e-4)


def test_batching_does_not_change_the_result(host, model):
    params = {"seq_len": 128, "max_windows": 6, "add_bos": True}
    one = host.evaluate("perplexity", model, params=params)
    batched = host.evaluate("perplexity", model, params={**params, "batch_size": 4})
    assert batched["perplexity"] == pytest.approx(one["perplexity"], rel=1e-5)


@pytest.mark.slow
def test_reproduces_published_tinystories_perplexity(host, model):
    """stories260K on the bundled TinyStories sample: 759 windows of 512, ppl 4.689 (SOURCE.md)."""
    metrics = host.evaluate(
        "perplexity", model, params={"seq_len": 512, "add_bos": True, "collapse_blank_lines": True}
    )
    assert metrics["windows"] == 759
    assert metrics["tokens"] == 387_849
    assert metrics["perplexity"] == pytest.approx(4.689, abs=0.001)


def test_jsonl_records_are_joined(host, model, tmp_path):
    lines = example_text().read_text().split("\n\n")[:60]
    jsonl = tmp_path / "stories.jsonl"
    jsonl.write_text("\n".join(json.dumps({"story": line}) for line in lines))
    metrics = host.evaluate("perplexity", model, params={"text": str(jsonl), "field": "story", "seq_len": 64})
    assert metrics["windows"] >= 1 and math.isfinite(metrics["perplexity"])


def test_bad_inputs(host, model, tmp_path):
    with pytest.raises(DataError, match="no such text file"):
        host.evaluate("perplexity", model, params={"text": str(tmp_path / "missing.txt")})
    short = tmp_path / "short.txt"
    short.write_text("Once upon a time.")
    with pytest.raises(DataError, match="fewer than one window"):
        host.evaluate("perplexity", model, params={"text": str(short), "seq_len": 64})
    with pytest.raises(ConfigError, match="exceeds the model's context of 512"):
        host.evaluate("perplexity", model, params={"seq_len": 1024})
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\nnot json\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2 is not valid JSON"):
        host.evaluate("perplexity", model, params={"text": str(bad)})
    with pytest.raises(ConfigError, match="seq_len"):
        host.evaluate("perplexity", model, params={"seq_len": "long"})


def test_crlf_copy_of_a_text_gives_the_same_tokens(model, tmp_path):
    text = example_text().read_text()[:5000]
    unix, dos = tmp_path / "unix.txt", tmp_path / "dos.txt"
    unix.write_bytes(text.encode())
    dos.write_bytes(text.replace("\n", "\r\n").encode())
    assert torch.equal(tokenize(model.tokenizer, TextSource(unix).text()), tokenize(model.tokenizer, TextSource(dos).text()))
    assert TextSource(unix).fingerprint != TextSource(dos).fingerprint  # the bytes differ, and that is recorded


def test_wikitext2_tokenizes_like_the_reference_protocol(assets):
    """The raw WikiText-2 test file (a CRLF copy) gives the 304,986 SmolLM2 tokens of SOURCE.md."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(assets / "smollm2-135m-instruct-q4_1" / "tokenizer")
    ids = tokenize(tokenizer, TextSource(assets / "wikitext-2" / "wikitext-2-raw-test.txt").text())
    assert ids.numel() == 304_986
