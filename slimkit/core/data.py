"""Calibration samples and evaluation text from local files, each with a sha256 fingerprint.

Text comes from plain text files (read whole, with universal newlines) or JSONL files (one record per line, the ``field``
of each record joined with ``join``; ``"\\n\\n"`` as in the GPTQ/SparseGPT WikiText-2 protocol).
The fingerprint covers the file's bytes and every option that changes the text, so two runs on
the same fingerprint saw the same tokens.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from slimkit.core.errors import DataError


def sha256_bytes(data: bytes) -> str:
    """``"sha256:"`` and the hex digest of ``data``: the form of every fingerprint slimkit records."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class TextSource:
    """A text file (``.txt`` and anything not ``.jsonl``) or a JSONL file to read text from."""

    path: Path
    field: str = "text"
    join: str = "\n\n"
    collapse_blank_lines: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path).expanduser())

    @cached_property
    def raw(self) -> bytes:
        if not self.path.is_file():
            raise DataError(f"no such text file: {self.path}")
        return self.path.read_bytes()

    def text(self) -> str:
        try:
            decoded = self.raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataError(f"{self.path} is not UTF-8 text: {error}") from None
        # Universal newlines, as Python's text mode reads files: a CRLF copy of a corpus must
        # give the same tokens (and perplexity) as the original.
        decoded = decoded.replace("\r\n", "\n").replace("\r", "\n")
        text = self._jsonl(decoded) if self.path.suffix == ".jsonl" else decoded
        if self.collapse_blank_lines:
            text = re.sub(r"\n{2,}", "\n", text)
        if not text.strip():
            raise DataError(f"{self.path} has no text")
        return text

    def _jsonl(self, decoded: str) -> str:
        parts = []
        for number, line in enumerate(decoded.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{self.path}:{number} is not valid JSON: {error.msg}") from None
            if not isinstance(record, dict) or self.field not in record:
                raise DataError(f"{self.path}:{number} has no field {self.field!r}")
            parts.append(str(record[self.field]))
        return self.join.join(parts)

    @property
    def fingerprint(self) -> str:
        options = json.dumps(
            {"field": self.field, "join": self.join, "collapse": self.collapse_blank_lines,
             "jsonl": self.path.suffix == ".jsonl"},
            sort_keys=True,
        )
        return sha256_bytes(self.raw + b"\0" + options.encode())


def tokenize(tokenizer: Any, text: str, *, add_bos: bool = False) -> torch.Tensor:
    """The whole text as one 1-D tensor of token ids (no special tokens, optional leading BOS)."""
    if tokenizer is None:
        raise DataError("the model has no tokenizer, so text cannot be tokenized for it")
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    if add_bos:
        bos = getattr(tokenizer, "bos_token_id", None)
        if bos is None:
            raise DataError("add_bos was asked for but the tokenizer has no BOS token")
        ids = [bos] + list(ids)
    return torch.tensor(ids, dtype=torch.long)


@dataclass(frozen=True)
class CalibrationData:
    """``n`` token windows of ``seq_len`` drawn with a seed; ``input_ids`` is ``[n, seq_len]``."""

    input_ids: torch.Tensor
    fingerprint: str
    source: str
    seed: int
    precision: str = "float32"  # what the calibration engine computes activations in
    #: the ranks of a data-parallel run (:class:`~slimkit.core.distributed.World`) among which the
    #: calibration engine divides the samples; ``None``: one process runs them all
    world: Any = field(default=None, compare=False, repr=False)

    def split(self, world: Any) -> "CalibrationData":
        """The same samples, to be divided among ``world``'s ranks by the calibration engine."""
        return replace(self, world=world if world is not None and world.distributed else None)

    @property
    def n_samples(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.input_ids.shape[1])


PRECISIONS = ("float32", "bfloat16")


def calibration_samples(
    tokenizer: Any, source: TextSource, *, n_samples: int, seq_len: int, seed: int = 0,
    precision: str = "float32",
) -> CalibrationData:
    """Draw ``n_samples`` random windows of ``seq_len`` tokens (the GPTQ/SparseGPT protocol).

    ``precision`` is what the calibration engine runs the model's blocks in (``bfloat16``: under
    autocast, as the reference GPU implementations run in half precision); it is part of the
    fingerprint, since methods see different activations."""
    if precision not in PRECISIONS:
        raise DataError(f"calibration precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if n_samples < 1 or seq_len < 1:
        raise DataError(f"n_samples and seq_len must be positive, got {n_samples} and {seq_len}")
    ids = tokenize(tokenizer, source.text())
    if ids.numel() <= seq_len:
        raise DataError(
            f"{source.path} has {ids.numel()} tokens, too few for windows of {seq_len}"
        )
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - seq_len, (n_samples,), generator=generator)
    windows = torch.stack([ids[s : s + seq_len] for s in starts.tolist()])
    digest = hashlib.sha256(windows.numpy().tobytes())
    digest.update(source.fingerprint.encode())
    if precision != "float32":  # float32 fingerprints stay what they were before this option
        digest.update(f"precision={precision}".encode())
    return CalibrationData(windows, "sha256:" + digest.hexdigest(), str(source.path), seed, precision)
