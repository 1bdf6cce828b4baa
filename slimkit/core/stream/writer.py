"""Writing a model's weights part by part as it is compressed: one shard per decoder block.

Each part is written under a hidden name and renamed into place, so a part file on disk is always
whole, whatever stops the run; its tensors' SHA-256 are taken as it is written. :meth:`finish`
names the shards as Hugging Face does (``model-00001-of-00031.safetensors``) and writes the index,
or, when slimkit replaced layers by its own modules (quantized, low-rank), names them
``slimkit-*.safetensors`` and returns the ``modules`` section that lists them (see
:mod:`slimkit.core.storage`): plain ``transformers`` must not load such a folder as float.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from slimkit.core.atomic import write_staged
from slimkit.core.failures import FileSystemError, os_cause
from slimkit.core.storage import _digest as tensor_digest

PART_PREFIX = "part-"


@dataclass
class ShardWriter:
    """Writes parts into ``folder`` (created if needed); see the module docstring."""

    folder: Path
    weight_map: dict[str, str] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)
    nbytes: dict[str, int] = field(default_factory=dict)
    parts: list[str] = field(default_factory=list)

    def part_file(self, part: str) -> Path:
        return self.folder / f"{PART_PREFIX}{part}.safetensors"

    def write(self, part: str, tensors: dict[str, torch.Tensor]) -> None:
        """Write ``tensors`` as the part called ``part`` (whole or not at all)."""
        from safetensors.torch import save_file

        stored = {key: t.detach().contiguous().cpu() for key, t in tensors.items()}
        write_staged(self.part_file(part), "file", lambda path: save_file(stored, str(path), metadata={"format": "pt"}),
                     what="cannot write")
        self.record(part, stored)

    def record(self, part: str, tensors: dict[str, torch.Tensor]) -> None:
        """Note ``part``'s tensors as written (also when a resumed run finds it on disk)."""
        for key, tensor in tensors.items():
            self.weight_map[key] = self.part_file(part).name
            self.sha256[key] = tensor_digest(tensor)  # what storage records and checks on load
            self.nbytes[key] = tensor.numel() * tensor.element_size()
        if part not in self.parts:
            self.parts.append(part)

    @property
    def files(self) -> list[str]:
        """The shard files written so far (their final names once :meth:`finish` ran)."""
        return sorted(set(self.weight_map.values()))

    @property
    def total_bytes(self) -> int:
        return sum(self.nbytes.values())

    def finish(self, *, slimkit_modules: bool) -> dict[str, str]:
        """Give the parts their final names, in the order they were written, and write the
        Hugging Face index unless ``slimkit_modules``. Returns the final weight map."""
        stem = "slimkit" if slimkit_modules else "model"
        count = len(self.parts)
        names = {self.part_file(part).name: f"{stem}-{i:05d}-of-{count:05d}.safetensors"
                 for i, part in enumerate(self.parts, start=1)}
        try:
            for old, new in names.items():
                os.replace(self.folder / old, self.folder / new)
            self.weight_map = {key: names[file] for key, file in self.weight_map.items()}
            if not slimkit_modules:
                index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(self.weight_map.items()))}
                (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        except OSError as error:
            raise FileSystemError(f"cannot finish the weights in {self.folder}: {os_cause(error)}") from error
        return self.weight_map
