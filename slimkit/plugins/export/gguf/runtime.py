"""Running a GGUF file in real llama.cpp, in process, through the ``xllamacpp`` wheel (no compiler).

:class:`LlamaCpp` opens one file in llama.cpp's server (which ``xllamacpp`` embeds; requests are
passed as dicts, ``/tokenize`` goes over its local HTTP port) and answers what the export checks
and ``bench/export.py`` need:

* :meth:`LlamaCpp.logprobs`: teacher-forced log-probabilities of a token sequence. llama.cpp's
  completion API scores only what it samples, so each next token is forced with a logit bias of
  +100 and its log-probability read from the *raw* logits (``post_sampling_probs: false``); with
  ``cache_prompt`` the KV cache is reused, so each request evaluates about one new token.
  llama.cpp's server reports no probabilities for a generated token that ends inside a UTF-8
  character (a byte-fallback or partial BPE piece); there a *complete* token is forced instead and
  the whole raw distribution asked for, from which the target's log-probability is read (the logits
  of a position do not depend on the token sampled there);
* :func:`perplexity` over windows, the same protocol as slimkit's ``perplexity`` evaluator
  (each window scored on its own, ``exp`` of the mean next-token NLL);
* :meth:`LlamaCpp.greedy` tokens and :meth:`LlamaCpp.decode_speed` (tokens per second);
* :meth:`LlamaCpp.tokenize` (the file's own tokenizer).

llama.cpp multiplies quantized weights with 8-bit-quantized activations and keeps an f16 KV cache,
so it agrees with a float32 forward of the same weights to a few hundredths of a nat per token,
not bit for bit: compare perplexities as a ratio and log-probabilities on average.
"""

from __future__ import annotations

import json
import math
import urllib.request
from pathlib import Path
from typing import Any, Iterable, Sequence

FORCE = 100.0  # logit bias that makes the forced token win every time
ALL = 1 << 30  # n_probs: llama.cpp returns min(vocabulary, n_probs) entries


class LlamaCpp:
    """One GGUF file loaded in llama.cpp (use as a context manager, or call :meth:`close`)."""

    def __init__(self, path: str | Path, *, n_ctx: int = 512, threads: int = 1, batch: int = 512,
                 verbose: bool = False) -> None:
        try:
            import xllamacpp
        except ImportError as error:  # pragma: no cover - the test extras install it
            raise ImportError("running GGUF files needs xllamacpp: pip install xllamacpp") from error
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = n_ctx
        params.n_batch = batch
        params.n_parallel = 1
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.warmup = False
        params.verbosity = 3 if verbose else 0  # llama.cpp's log is long; ask for it when a file will not load
        self.path = Path(path)
        self._safe: int | None = None
        try:
            self._server: Any = xllamacpp.Server(params)
        except RuntimeError as error:
            raise RuntimeError(f"llama.cpp could not load {path} ({error}); LlamaCpp(..., verbose=True) "
                               "shows its log") from None

    def __enter__(self) -> "LlamaCpp":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._server = None  # the server stops when the object goes

    def _complete(self, request: dict[str, Any]) -> dict[str, Any]:
        if self._server is None:
            raise RuntimeError(f"llama.cpp runner for {self.path} is closed")
        reply = self._server.handle_completions(request)
        if not isinstance(reply, dict) or "error" in reply:
            raise RuntimeError(f"llama.cpp refused the request: {reply}")
        return reply

    def score(self, ids: Sequence[int]) -> list[tuple[float, int]]:
        """For ``t = 1 .. len(ids) - 1``: ``(log p(ids[t] | ids[:t]), llama.cpp's most likely token
        there)``, teacher-forced."""
        out = []
        for t in range(1, len(ids)):
            target = int(ids[t])
            step = self._forced(ids[:t], target, 1)
            if step is None:  # target ends inside a UTF-8 character: read it from the whole distribution
                step = self._forced(ids[:t], self._complete_token(), ALL)
                if step is None:
                    raise RuntimeError(f"llama.cpp reported no probabilities at position {t}")
                found = [entry["logprob"] for entry in step["top_logprobs"] if entry["id"] == target]
                if not found:
                    raise RuntimeError(f"token {target} is not in llama.cpp's vocabulary")
                step = {"id": target, "logprob": found[0], "top_logprobs": step["top_logprobs"]}
            out.append((float(step["logprob"]), int(step["top_logprobs"][0]["id"])))
        return out

    def _forced(self, prompt: Sequence[int], token: int, n_probs: int) -> dict[str, Any] | None:
        """One token after ``prompt`` with ``token`` forced: its log-probability and the ``n_probs``
        most likely tokens, from the raw logits; None where the server withholds them."""
        reply = self._complete({
            "prompt": [int(i) for i in prompt], "n_predict": 1, "n_probs": n_probs, "temperature": 0.0,
            "cache_prompt": True, "logit_bias": [[token, FORCE]], "post_sampling_probs": False,
        })
        logprobs = reply["choices"][0].get("logprobs")
        if not logprobs or not logprobs.get("content"):
            return None
        step = logprobs["content"][0]
        if step["id"] != token:
            raise RuntimeError(f"llama.cpp sampled {step['id']} although {token} was forced")
        return step

    def _complete_token(self) -> int:
        """A token that is whole text on its own (the file's token for ".")."""
        if self._safe is None:
            self._safe = self.tokenize(".")[-1]
        return self._safe

    def logprobs(self, ids: Sequence[int]) -> list[float]:
        """``log p(ids[t] | ids[:t])`` for ``t = 1 .. len(ids) - 1`` (teacher forcing)."""
        return [value for value, _ in self.score(ids)]

    def greedy(self, prompt: Sequence[int], n: int) -> list[int]:
        """``n`` tokens after ``prompt`` by greedy decoding."""
        reply = self._complete({"prompt": [int(i) for i in prompt], "n_predict": n, "temperature": 0.0,
                                "top_k": 1, "n_probs": 1, "cache_prompt": False, "ignore_eos": True})
        return [int(step["id"]) for step in reply["choices"][0]["logprobs"]["content"]]

    def decode_speed(self, prompt: Sequence[int], n: int) -> float:
        """Decoded tokens per second over ``n`` greedy tokens after ``prompt`` (llama.cpp's timing)."""
        reply = self._complete({"prompt": [int(i) for i in prompt], "n_predict": n, "temperature": 0.0,
                                "top_k": 1, "cache_prompt": False, "ignore_eos": True})
        return float(reply["timings"]["predicted_per_second"])

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        """Token ids of ``text`` by the file's tokenizer."""
        body = json.dumps({"content": text, "add_special": add_special}).encode()
        request = urllib.request.Request(self._server.listening_address + "/tokenize", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310 - the in-process server
            return [int(i) for i in json.loads(answer.read())["tokens"]]


def perplexity(runner: LlamaCpp, windows: Iterable[Sequence[int]]) -> dict[str, Any]:
    """Perplexity of ``windows`` (each scored on its own), every per-token log-probability and
    llama.cpp's most likely token at every position (``top``)."""
    scored = [runner.score(window) for window in windows]
    logprobs = [[value for value, _ in window] for window in scored]
    flat = [value for window in logprobs for value in window]
    nll = -sum(flat) / len(flat)
    return {"perplexity": math.exp(nll), "nll": nll, "tokens": len(flat), "logprobs": logprobs,
            "top": [[top for _, top in window] for window in scored]}
