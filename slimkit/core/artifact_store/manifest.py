"""A stored model's manifest: every file with its size and sha256, and the check against it.

The manifest is what makes a stored model whole: a folder store writes it inside the model folder
before renaming the folder into place, a remote store uploads it after every file (its presence
is the commit). Whoever opens a stored model checks every file against it first; a file that
differs is one :class:`ChecksumError` naming the model and the file.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimkit.core.catalogue.artifacts import MANIFEST_FILE
from slimkit.core.errors import ModelLoadError, SlimkitError

FORMAT = "slimkit-artifact/1"
_CHUNK = 8 * 2**20


class ArtifactStoreError(SlimkitError):
    """The artifact store cannot be used: unreachable, read-only, full, or without the model."""


class ChecksumError(ModelLoadError):
    """A stored model's file differs from its manifest (damaged or tampered with)."""


def id_hex(model_id: str) -> str:
    """The name of a model in a store: the hex digest of its content id (``sha256:<hex>``)."""
    return model_id.rpartition(":")[2].lower()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Manifest:
    """``files``: relative path -> ``{"size": bytes, "sha256": hex}``; ``folder``: where a remote
    store keeps the files (one upload's own prefix, so racing uploads never mix files)."""

    model_id: str
    files: dict[str, dict[str, Any]]
    created: float = field(default_factory=time.time)
    name: str | None = None
    folder: str | None = None

    @classmethod
    def of_folder(cls, folder: Path, model_id: str, name: str | None = None) -> "Manifest":
        files = {}
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            relative = path.relative_to(folder).as_posix()
            if relative != MANIFEST_FILE:
                files[relative] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
        return cls(model_id, files, name=name)

    @property
    def size(self) -> int:
        return sum(int(entry["size"]) for entry in self.files.values())

    def to_bytes(self) -> bytes:
        document = {"format": FORMAT, "model_id": self.model_id, "created": self.created, "name": self.name,
                    "folder": self.folder, "files": self.files}
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> "Manifest":
        try:
            document = json.loads(data)
            if document.get("format") != FORMAT:
                raise ValueError(f"format {document.get('format')!r}, not {FORMAT!r}")
            return cls(document["model_id"], dict(document["files"]), float(document["created"]),
                       document.get("name"), document.get("folder"))
        except (ValueError, KeyError, TypeError) as error:
            raise ArtifactStoreError(f"the manifest {where} cannot be read: {error}") from None

    def write(self, folder: Path) -> None:
        (folder / MANIFEST_FILE).write_bytes(self.to_bytes())

    @classmethod
    def read(cls, folder: Path) -> "Manifest | None":
        path = folder / MANIFEST_FILE
        return cls.from_bytes(path.read_bytes(), str(path)) if path.is_file() else None

    def verify(self, folder: Path, label: str) -> None:
        """Check every file of ``folder`` against the manifest (size first: cheap).

        :param label: how the message names the model and where it is stored (not ``folder``,
            which may be a staging folder that is gone by the time the message is read).
        :raises ChecksumError: a file is missing or differs.
        """
        for relative, entry in self.files.items():
            path = folder / relative
            if not path.is_file():
                raise ChecksumError(f"model {label}: file {relative} is missing")
            size = path.stat().st_size
            if size != entry["size"]:
                raise ChecksumError(f"model {label}: file {relative} has {size} bytes, its manifest says "
                                    f"{entry['size']} (a damaged or changed copy)")
            got = file_sha256(path)
            if got != entry["sha256"]:
                raise ChecksumError(f"model {label}: file {relative} does not match its checksum (sha256 "
                                    f"{got[:12]}..., manifest {str(entry['sha256'])[:12]}...): a damaged or "
                                    "changed copy")
