"""A GGUF file's key/value metadata read without its tensors, fast.

``gguf.GGUFReader`` builds numpy views of every field part, which takes seconds for a 49k-token
vocabulary (and it is done for every ``slimkit show FILE``). This reads the same little-endian
GGUF v2/v3 header straight from a memory map: strings as raw bytes (so copied tokens stay byte
for byte what they were), numeric arrays in one ``numpy.frombuffer`` each. Values come back as
``gguf.GGUFValue`` so they can be written again with ``GGUFWriter.add_key_value``.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Any, Callable

import numpy as np

MAGIC = b"GGUF"
# GGUFValueType code -> (struct format, numpy dtype) of the scalar types
SCALARS = {0: ("<B", "<u1"), 1: ("<b", "<i1"), 2: ("<H", "<u2"), 3: ("<h", "<i2"), 4: ("<I", "<u4"),
           5: ("<i", "<i4"), 6: ("<f", "<f4"), 7: ("<?", "?"), 10: ("<Q", "<u8"), 11: ("<q", "<i8"),
           12: ("<d", "<f8")}
STRING, ARRAY = 8, 9


class _Cursor:
    def __init__(self, data: Any) -> None:
        self.data, self.at = data, 0

    def unpack(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.data, self.at)[0]
        self.at += struct.calcsize(fmt)
        return value

    def string(self) -> bytes:
        size = self.unpack("<Q")
        value = bytes(self.data[self.at:self.at + size])
        if len(value) != size:
            raise ValueError("truncated string")
        self.at += size
        return value

    def value(self, kind: int) -> Any:
        if kind == STRING:
            return self.string()
        if kind in SCALARS:
            return self.unpack(SCALARS[kind][0])
        raise ValueError(f"unknown GGUF value type {kind}")

    def array(self) -> tuple[int, list[Any]]:
        kind, count = self.unpack("<I"), self.unpack("<Q")
        if kind == STRING:
            return kind, [self.string() for _ in range(count)]
        if kind not in SCALARS:
            raise ValueError(f"unsupported GGUF array of type {kind}")
        dtype = np.dtype(SCALARS[kind][1])
        values = np.frombuffer(self.data, dtype, count, self.at)
        self.at += count * dtype.itemsize
        return kind, values.tolist()


def read_metadata(path: str | Path, wanted: Callable[[str], bool] = lambda key: True,
                  stop_at: str | None = None) -> dict[str, Any]:
    """``key -> gguf.GGUFValue`` of the keys ``wanted`` selects (reading stops after ``stop_at``).
    Raises ``ValueError`` for a file that is not a readable little-endian GGUF v2/v3."""
    import gguf

    with open(path, "rb") as handle:
        if handle.read(4) != MAGIC:
            raise ValueError(f"{path} is not a GGUF file")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            cursor = _Cursor(data)
            cursor.at = 4
            try:
                version = cursor.unpack("<I")
                if version not in (2, 3):
                    raise ValueError(f"GGUF version {version} (little-endian v2/v3 are read)")
                cursor.unpack("<Q")  # tensor count
                fields: dict[str, Any] = {}
                for _ in range(cursor.unpack("<Q")):
                    key = cursor.string().decode("utf-8")
                    kind = cursor.unpack("<I")
                    if kind == ARRAY:
                        sub, values = cursor.array()
                        item = gguf.GGUFValue(values, gguf.GGUFValueType(kind), gguf.GGUFValueType(sub))
                    else:
                        item = gguf.GGUFValue(cursor.value(kind), gguf.GGUFValueType(kind))
                    if wanted(key):
                        fields[key] = item
                    if key == stop_at:
                        break
            except struct.error as error:
                raise ValueError(f"{path} ends inside its metadata: {error}") from None
            return fields
