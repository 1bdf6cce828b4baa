"""The tokenizer a GGUF carries (``tokenizer.ggml.*`` keys): copied from the source GGUF, or
converted from the Hugging Face tokenizer.

* **From a GGUF** (the default when the model, or the base of a derived model, was loaded from
  one): every ``tokenizer.*`` key is copied byte for byte, so llama.cpp tokenizes exactly as it
  did for the source file.
* **SentencePiece (Llama 2 style)**: from ``tokenizer.model`` with gguf-py's
  ``SentencePieceVocab`` where the file and the ``sentencepiece`` package are there; otherwise
  from ``tokenizer.json`` (a byte-fallback BPE). llama.cpp's SentencePiece tokenizer merges the
  adjacent pair whose joined piece has the highest *score*, so the scores must rank pieces as the
  BPE merges do. A tokenizer converted from SentencePiece keeps its pieces in score order, so
  ``score = -(position among normal pieces)`` gives back the original scores (checked against
  llama2.c's tok512 for stories260K) provided the merges agree with that order; where they do
  not, pieces are ranked by the first merge that makes them. gguf-py's ``LlamaHfVocab`` gives every piece
  -1000, which would make llama.cpp merge left to right instead, so it is not used.
* **Byte-level BPE (GPT-2 style, e.g. SmolLM2)**: gguf-py's ``BpeVocab`` tokens and
  ``SpecialVocab`` merges; llama.cpp also needs the pre-tokenizer by name, read from
  ``tokenizer.json``: a plain ``ByteLevel`` is ``gpt-2``, Llama 3's split regex is ``llama-bpe``;
  any other is refused (copy the tokenizer from a GGUF instead).

Both conversions take special token ids, BOS/EOS behaviour and the chat template from gguf-py's
``SpecialVocab``; whether BOS is added is checked on the tokenizer itself. A vocabulary shorter
than the embedding is padded with unused ``[PAD{i}]`` tokens, as llama.cpp's converter does.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LLAMA3_SPLIT = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
                "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")


@dataclass
class Tokenizer:
    """The ``tokenizer.*`` keys to write (``gguf.GGUFValue`` by key), where they came from and how
    many tokens they list."""

    source: str
    fields: dict[str, Any] = field(default_factory=dict)
    count: int = 0


def source_gguf(model: Any) -> Path | None:
    """The GGUF file ``model`` (a LoadedModel) was loaded from, or its base was, if it still exists."""
    path = getattr(model, "path", None)
    if path is not None and Path(path).suffix == ".gguf" and Path(path).is_file():
        return Path(path)
    base = ((getattr(model, "provenance", None) or {}).get("base") or {}).get("source")
    if isinstance(base, str) and base.endswith(".gguf") and Path(base).expanduser().is_file():
        return Path(base).expanduser()
    return None


def resolve(model: Any, choice: str, vocab: int) -> tuple[Tokenizer | None, list[str]]:
    """The tokenizer to write for ``choice`` (``auto``, ``hf``, ``gguf`` or a path to a .gguf)
    and a model with ``vocab`` embedding rows, or the problems that prevent it."""
    if choice not in ("auto", "hf", "gguf"):
        path = Path(choice).expanduser()
        if not path.is_file():
            return None, [f"tokenizer: no such GGUF file {path}"]
        return from_gguf(path, vocab)
    found = source_gguf(model) if choice != "hf" else None
    if found is not None:
        return from_gguf(found, vocab)
    if choice == "gguf":
        return None, ["tokenizer=gguf: the model was not loaded from a GGUF file (nor was its base); "
                      "use tokenizer=hf or a path to a .gguf"]
    return from_hf(model, vocab)


def from_gguf(path: Path, vocab: int) -> tuple[Tokenizer | None, list[str]]:
    """Every ``tokenizer.*`` key of the GGUF at ``path``, strings copied as raw bytes."""
    from slimkit.plugins.export.gguf.metadata import read_metadata

    try:
        fields = read_metadata(path, lambda key: key.startswith("tokenizer."))
    except (OSError, ValueError) as error:  # not a GGUF, truncated: one line, not a traceback
        return None, [f"tokenizer: cannot read {path} as GGUF: {error}"]
    tokens = fields.get("tokenizer.ggml.tokens")
    if tokens is None:
        return None, [f"tokenizer: {path} has no tokenizer.ggml.tokens to copy"]
    count = len(tokens.value)
    if count != vocab:
        return None, [f"tokenizer: {path} lists {count} tokens but the model's embedding has {vocab} rows; "
                      "use tokenizer=hf"]
    return Tokenizer(f"copied from {path.name}", fields, count), []


def from_hf(model: Any, vocab: int) -> tuple[Tokenizer | None, list[str]]:
    """Convert ``model.tokenizer`` (a transformers tokenizer) to ``tokenizer.ggml.*`` keys."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        return None, ["tokenizer: the model has no tokenizer and was not loaded from a GGUF; "
                      "pass tokenizer=PATH.gguf to copy one"]
    with tempfile.TemporaryDirectory(prefix="slimkit-gguf-vocab-") as tmp:
        try:
            return _convert(Path(tmp), model, tokenizer, vocab)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:  # the tokenizer's files, not us
            return None, [f"tokenizer: could not convert the Hugging Face tokenizer ({type(error).__name__}: "
                          f"{str(error).splitlines()[0] if str(error) else ''}); copy one from a GGUF "
                          "(tokenizer=PATH.gguf)"]


def _convert(folder: Path, model: Any, tokenizer: Any, vocab: int) -> tuple[Tokenizer | None, list[str]]:
    tokenizer.save_pretrained(folder)
    if model.config is not None:
        model.config.to_json_file(folder / "config.json")
    spec = folder / "tokenizer.json"
    data = json.loads(spec.read_text(encoding="utf-8")) if spec.is_file() else {}
    kind = (data.get("model") or {}).get("type")
    if (folder / "tokenizer.model").is_file() and _has_sentencepiece():
        built = _sentencepiece(folder)
    elif kind == "BPE" and data["model"].get("byte_fallback"):
        built = _llama_from_json(data, getattr(tokenizer, "unk_token", None))
    elif kind == "BPE" and (data.get("decoder") or {}).get("type") == "ByteLevel":
        pre = bpe_pre(data)
        if pre is None:
            return None, [f"tokenizer: the byte-level BPE pre-tokenizer {json.dumps(data.get('pre_tokenizer'))[:160]} "
                          "is not one llama.cpp can be told by name here (known: plain ByteLevel = gpt-2, "
                          "Llama 3's split = llama-bpe); copy the tokenizer from a GGUF (tokenizer=PATH.gguf)"]
        built = _bpe(folder, data, pre)
    else:
        return None, [f"tokenizer: a {kind or 'non-BPE'} tokenizer without tokenizer.model cannot be converted "
                      "(SentencePiece and byte-level BPE can); copy one from a GGUF (tokenizer=PATH.gguf)"]
    model_name, pre_name, tokens, scores, types, merges = built
    if len(tokens) > vocab:
        return None, [f"tokenizer: {len(tokens)} tokens but the model's embedding has only {vocab} rows"]
    for index in range(len(tokens), vocab):  # as llama.cpp's converter pads a short vocabulary
        tokens.append(f"[PAD{index}]".encode())
        types.append(_token_type("UNUSED"))
        if scores is not None:
            scores.append(0.0)
    fields = _fields(folder, tokenizer, model_name, pre_name, tokens, scores, types, merges)
    return Tokenizer(f"converted from the Hugging Face tokenizer ({model_name}, pre {pre_name})", fields, vocab), []


def _has_sentencepiece() -> bool:
    import importlib.util

    return importlib.util.find_spec("sentencepiece") is not None


def _token_type(name: str) -> int:
    import gguf

    return int(gguf.TokenType[name])


def _sentencepiece(folder: Path) -> tuple:
    import gguf

    vocab = gguf.SentencePieceVocab(folder)
    tokens, scores, types = [], [], []
    for text, score, kind in vocab.all_tokens():
        tokens.append(text)
        scores.append(float(score))
        types.append(int(kind))
    return "llama", "default", tokens, scores, types, False


def merge_ranks(merges: list[Any]) -> dict[str, int]:
    """Piece -> index of the first merge that makes it (merges as ``"a b"`` or ``[a, b]``)."""
    ranks: dict[str, int] = {}
    for rank, merge in enumerate(merges):
        left, right = merge if isinstance(merge, list) else merge.split(" ", 1)
        ranks.setdefault(left + right, rank)
    return ranks


def _llama_from_json(data: dict[str, Any], unk_token: str | None) -> tuple:
    """A byte-fallback BPE ``tokenizer.json`` as SentencePiece tokens, scores and types."""
    import re

    pieces = {index: piece for piece, index in data["model"]["vocab"].items()}
    added = {item["id"]: item for item in data.get("added_tokens", [])}
    pieces.update({index: item["content"] for index, item in added.items()})
    unk = data["model"].get("unk_token") or unk_token
    types = []
    for index in range(max(pieces) + 1):
        piece = pieces.get(index, f"[PAD{index}]")
        if piece == unk:
            kind = "UNKNOWN"
        elif index in added:
            kind = "CONTROL" if added[index].get("special") else "USER_DEFINED"
        elif re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", piece):
            kind = "BYTE"
        elif index not in pieces:
            kind = "UNUSED"
        else:
            kind = "NORMAL"
        types.append(kind)
    ranks = merge_ranks(data["model"].get("merges", []))
    normal = [i for i, kind in enumerate(types) if kind == "NORMAL"]
    merged = [ranks[pieces[i]] for i in normal if pieces[i] in ranks]
    if merged != sorted(merged):  # ids do not follow merge priority: rank by the merges instead
        normal.sort(key=lambda i: (ranks.get(pieces[i], len(ranks)), i))
    scores = [0.0] * len(types)
    for position, index in enumerate(normal):
        scores[index] = -float(position)
    tokens = [pieces.get(i, f"[PAD{i}]").encode("utf-8") for i in range(len(types))]
    return "llama", "default", tokens, scores, [_token_type(kind) for kind in types], False


def bpe_pre(data: dict[str, Any]) -> str | None:
    """llama.cpp's name for a byte-level BPE's pre-tokenizer, or ``None`` if not one it knows here."""
    if data.get("normalizer"):
        return None
    pre = data.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True) \
            and (steps[0].get("pattern") or {}).get("Regex") == LLAMA3_SPLIT:
        return "llama-bpe"
    return None


def _bpe(folder: Path, data: dict[str, Any], pre: str) -> tuple:
    import gguf

    vocab = gguf.BpeVocab(folder)
    special = {item["id"] for item in data.get("added_tokens", []) if item.get("special")}
    added = {item["id"] for item in data.get("added_tokens", [])}
    tokens, types = [], []
    for index, (text, _, _) in enumerate(vocab.all_tokens()):
        tokens.append(text.encode("utf-8") if isinstance(text, str) else bytes(text))
        kind = "CONTROL" if index in special else "USER_DEFINED" if index in added else "NORMAL"
        types.append(_token_type(kind))
    return "gpt2", pre, tokens, None, types, True


def _fields(folder: Path, tokenizer: Any, model_name: str, pre: str, tokens: list[bytes],
            scores: list[float] | None, types: list[int], merges: bool) -> dict[str, Any]:
    """The keys gguf-py's writer would add, collected on a writer that never opens a file."""
    import gguf

    scratch = gguf.GGUFWriter(None, "llama")
    scratch.add_tokenizer_model(model_name)
    scratch.add_tokenizer_pre(pre)
    scratch.add_token_list(tokens)
    if scores is not None:
        scratch.add_token_scores(scores)
    scratch.add_token_types(types)
    quiet = logging.getLogger("gguf.vocab")  # its notes on template shapes it half-parses are not ours to show
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        special = gguf.SpecialVocab(folder, load_merges=merges, n_vocab=len(tokens))
    finally:
        quiet.setLevel(level)
    probe = tokenizer("a")["input_ids"]
    bos, eos = getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)
    special.add_special_token["bos"] = bos is not None and bool(probe) and probe[0] == bos
    special.add_special_token["eos"] = eos is not None and bool(probe) and probe[-1] == eos
    special.add_to_gguf(scratch, quiet=True)
    return {key: value for key, value in scratch.kv_data[0].items() if key.startswith("tokenizer.")}
