"""The ``latency`` evaluator on the bundled stories260K Llama (fast: short prompt, few tokens)."""

from __future__ import annotations

import pytest
import torch

import slimkit
from slimkit.core.errors import ConfigError

FAST = {"prompt_tokens": 16, "new_tokens": 4, "repeats": 2, "warmup": 1}


@pytest.fixture
def host():
    return slimkit.make_host(load_entrypoints=False)


@pytest.fixture(scope="module")
def stories() -> slimkit.LoadedModel:
    return slimkit.load_model("example:stories260K")


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_causal_lm_metrics_are_present_and_positive(host, stories, restore_threads):
    metrics = host.evaluate("latency", stories, params=FAST)
    assert set(metrics) == {
        "threads", "prefill_ms", "prefill_tokens_per_s", "decode_ms_per_token", "decode_tokens_per_s",
        "load_avg_1m_before", "load_avg_1m_after",
    }
    assert all(value > 0 for key, value in metrics.items() if not key.startswith("load_avg"))
    assert all(metrics[key] >= 0 for key in ("load_avg_1m_before", "load_avg_1m_after"))
    assert metrics["threads"] == 1
    assert metrics["prefill_tokens_per_s"] == pytest.approx(16 / (metrics["prefill_ms"] / 1000))
    assert metrics["decode_tokens_per_s"] == pytest.approx(1000 / metrics["decode_ms_per_token"])


def test_threads_hold_during_the_run_and_are_restored(host, stories, restore_threads):
    torch.set_num_threads(1)
    seen = []
    ctx = host.context(progress=lambda event: seen.append((event.stage, event.done, event.total, torch.get_num_threads())))
    metrics = host.evaluate("latency", stories, params={**FAST, "threads": 2}, context=ctx)
    assert metrics["threads"] == 2
    assert torch.get_num_threads() == 1
    assert [s[:3] for s in seen] == [("repeats", 1, 3), ("repeats", 2, 3), ("repeats", 3, 3)]
    assert {s[3] for s in seen} == {2}


def test_threads_are_restored_when_the_run_fails(host, restore_threads, monkeypatch):
    stories = slimkit.load_model("example:stories260K")  # its own copy: forward is broken below
    torch.set_num_threads(1)

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(stories.model, "forward", broken)
    with pytest.raises(RuntimeError, match="boom"):
        host.evaluate("latency", stories, params={**FAST, "threads": 2})
    assert torch.get_num_threads() == 1


def test_too_long_request_is_refused_naming_both_numbers(host, stories):
    with pytest.raises(ConfigError, match=r"prompt_tokens 500 \+ new_tokens 20 = 520 exceeds the model's context of 512"):
        host.evaluate("latency", stories, params={"prompt_tokens": 500, "new_tokens": 20})
    info = host.evaluators.get("latency")
    exactly = host.config(info, {"prompt_tokens": 500, "new_tokens": 12})  # 512: exactly the context
    info.create().check(stories, exactly, host.context())


def test_invalid_parameters_are_config_errors(host, stories):
    with pytest.raises(ConfigError, match="threads"):
        host.evaluate("latency", stories, params={"threads": 0})
    with pytest.raises(ConfigError, match="unknown parameter"):
        host.evaluate("latency", stories, params={"thread": 2})


def test_encoder_gets_prefill_metrics_only(host, restore_threads):
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    encoder = slimkit.LoadedModel(BertModel(config).eval(), None, "tiny-bert")
    metrics = host.evaluate("latency", encoder, params=FAST)
    assert "decode_ms_per_token" not in metrics and "decode_tokens_per_s" not in metrics
    assert metrics["prefill_ms"] > 0 and metrics["prefill_tokens_per_s"] > 0
    with pytest.raises(ConfigError, match="prompt_tokens 100 exceeds the model's context of 64"):
        host.evaluate("latency", encoder, params={**FAST, "prompt_tokens": 100})
