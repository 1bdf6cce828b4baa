"""A model folder's safetensors weights, read one tensor at a time without loading the rest.

:class:`Checkpoint` maps every stored tensor to its file (one ``model.safetensors``, or the shards
an index lists) from the files' headers alone, and checks before any work that every shard is
there and whole: a file's length must equal the header's size plus the last tensor's end. Each
read opens its shard again (memory-mapped by safetensors) after checking its length once more,
so a shard deleted or truncated while a long run is under way is one clear error, never a crash
of the mapped read. Nothing is ever unpickled: a folder with only ``.bin`` weights is refused.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from slimkit.core.errors import ModelLoadError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


@dataclass(frozen=True)
class StoredTensor:
    """Where one tensor lives and what it is, as its file's header says."""

    file: Path
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count * _ITEMSIZE.get(self.dtype, 4)


_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
             "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def read_header(file: Path) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file and the file length it implies; a clear error if the
    file is missing, not safetensors, or shorter than its header says (truncated)."""
    try:
        with file.open("rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise ModelLoadError(f"{file} is not a safetensors file (empty or truncated)")
            (size,) = struct.unpack("<Q", head)
            if size > 100 * 2**20:
                raise ModelLoadError(f"{file} is not a safetensors file (header of {size} bytes)")
            header = json.loads(handle.read(size))
    except OSError as error:
        raise ModelLoadError(f"cannot read weights file {file}: {error.strerror or error}") from None
    except ValueError:
        raise ModelLoadError(f"{file} is not a safetensors file (its header is not JSON)") from None
    end = max((entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"), default=0)
    return header, 8 + size + end


class Checkpoint:
    """The tensors of a Hugging Face folder's safetensors weights (see the module docstring)."""

    def __init__(self, folder: Path, tensors: dict[str, StoredTensor], lengths: dict[Path, int]) -> None:
        self.folder = folder
        self.tensors = tensors
        self._lengths = lengths

    @classmethod
    def open(cls, folder: str | Path, *, files: list[str] | None = None) -> "Checkpoint":
        """Read the headers of ``folder``'s weights (``files``: these instead of the usual ones)."""
        folder = Path(folder)
        if files is None:
            files = _weight_files(folder)
        tensors: dict[str, StoredTensor] = {}
        lengths: dict[Path, int] = {}
        for name in files:
            file = folder / name
            if not file.is_file():
                raise ModelLoadError(f"weights file {file} is missing (its index lists it)")
            header, length = read_header(file)
            actual = file.stat().st_size
            if actual < length:
                raise ModelLoadError(f"weights file {file} is truncated: {actual:,} bytes, its header "
                                     f"says {length:,}")
            lengths[file] = length
            for key, entry in header.items():
                if key != "__metadata__":
                    tensors[key] = StoredTensor(file, entry["dtype"], tuple(entry["shape"]))
        return cls(folder, tensors, lengths)

    def __contains__(self, key: str) -> bool:
        return key in self.tensors

    @property
    def files(self) -> list[Path]:
        return sorted(self._lengths)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    def read(self, keys: list[str]) -> dict[str, torch.Tensor]:
        """The tensors called ``keys`` (copies in memory, as stored), a shard opened once for all
        of its keys; a shard that is gone or shorter than when the run began is a ModelLoadError."""
        from safetensors import SafetensorError, safe_open

        by_file: dict[Path, list[str]] = {}
        for key in keys:
            stored = self.tensors.get(key)
            if stored is None:
                raise ModelLoadError(f"{self.folder} has no tensor {key}")
            by_file.setdefault(stored.file, []).append(key)
        out: dict[str, torch.Tensor] = {}
        for file, names in by_file.items():
            try:
                length = file.stat().st_size
            except OSError:
                raise ModelLoadError(f"weights file {file} disappeared during the run") from None
            if length < self._lengths[file]:
                raise ModelLoadError(f"weights file {file} was truncated during the run ({length:,} of "
                                     f"{self._lengths[file]:,} bytes)")
            try:
                with safe_open(str(file), framework="pt") as handle:
                    for name in names:
                        out[name] = handle.get_tensor(name)
            except (SafetensorError, OSError) as error:
                raise ModelLoadError(f"cannot read {file}: {error}") from None
        return out


def _weight_files(folder: Path) -> list[str]:
    """The safetensors files holding ``folder``'s weights, or a clear refusal."""
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError):
            raise ModelLoadError(f"{index} is not a usable safetensors index (no weight_map)") from None
        return sorted(set(weight_map.values()))
    if (folder / SINGLE_FILE).is_file():
        return [SINGLE_FILE]
    pickles = sorted(p.name for p in folder.glob("*.bin"))
    if pickles:
        raise ModelLoadError(f"{folder} has only pickle weights ({', '.join(pickles[:3])}); streaming reads "
                             "safetensors (and slimkit never unpickles): convert the folder to safetensors first")
    raise ModelLoadError(f"{folder} has no safetensors weights ({SINGLE_FILE} or {INDEX_FILE}) to stream")
