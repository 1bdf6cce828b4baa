"""The artifact store interface, and the reference markers every store keeps the same way.

A store keeps derived models under their content id (``<store>/<id hex>``), so two runs that make
the same model share one artifact. Each catalogue that refers to a stored model leaves a marker
``<store>/.refs/<id hex>/<catalogue token>``, written before it publishes: a store shared by
several catalogues (two SQLite files, or the clients of one server) cannot see the other
catalogues' rows, but it can see their markers, and ``gc`` removes a model only when no marker
is left (see :mod:`slimkit.core.artifact_store.gc`).
"""

from __future__ import annotations

import json
import re
import time
from abc import ABC, abstractmethod
from pathlib import Path

from slimkit.core.artifact_store.manifest import Manifest, id_hex
from slimkit.core.catalogue.artifacts import REFS_FOLDER

_HEX = re.compile(r"[0-9a-f]{64}")


class ArtifactStore(ABC):
    """Where a team keeps derived models: publish, open (verified), list, remove, check writable.

    Subclasses give the storage primitives (small files by relative path) and the model transfers;
    the reference markers are built on the primitives here.
    """

    url: str

    # -- storage primitives (relative paths, ``/``-separated) ----------------------------------
    @abstractmethod
    def _write_small(self, relative: str, data: bytes) -> None: ...

    @abstractmethod
    def _delete(self, relative: str) -> None: ...

    @abstractmethod
    def _names(self, relative: str) -> list[str]:
        """The names directly under a folder (empty when there is none)."""

    # -- models ---------------------------------------------------------------------------------
    @abstractmethod
    def location(self, model_id: str) -> str:
        """What a catalogue row records as the model's location: any machine of the team opens it."""

    @abstractmethod
    def manifest(self, model_id: str) -> Manifest | None:
        """The stored model's manifest; ``None`` when it is not (completely) there."""

    @abstractmethod
    def ids(self) -> list[str]:
        """The hex ids of the complete models in the store."""

    @abstractmethod
    def publish(self, folder: Path, model_id: str, token: str, name: str | None = None) -> Path:
        """Store the finished model ``folder`` (which this call takes over: moved or removed) under
        ``model_id``, marked as referred to by ``token``; returns its local, verified folder."""

    @abstractmethod
    def open(self, model_id: str, label: str) -> Path:
        """A local folder of the model, every file checked against the manifest."""

    @abstractmethod
    def copy_to(self, model_id: str, target: Path, label: str) -> Path:
        """Copy the model into ``target`` (which must not exist), verified, atomically."""

    @abstractmethod
    def remove(self, model_id: str) -> bool:
        """Remove the model unless a reference marker appears meanwhile; whether it was removed."""

    @abstractmethod
    def check_writable(self) -> None:
        """Raise :class:`ArtifactStoreError` unless a model could be published now (cheap probe)."""

    @abstractmethod
    def stale_incoming(self, grace_s: float) -> list[str]:
        """Half-published uploads or folders older than ``grace_s`` (left by killed runs)."""

    @abstractmethod
    def remove_incoming(self, name: str) -> None: ...

    def has(self, model_id: str) -> bool:
        return self.manifest(model_id) is not None

    def age_s(self, model_id: str) -> float:
        manifest = self.manifest(model_id)
        return time.time() - manifest.created if manifest is not None else 0.0

    def find(self, prefix: str) -> list[str]:
        """Full ids (``sha256:<hex>``) of stored models whose id starts with ``prefix``."""
        wanted = id_hex(prefix)
        if not wanted or not re.fullmatch(r"[0-9a-f]+", wanted):
            return []
        # names first (one listing), manifests only for the candidates (a request each, remotely)
        return [f"sha256:{name}" for name in self._names("")
                if _HEX.fullmatch(name) and name.startswith(wanted) and self.has(name)]

    # -- reference markers ----------------------------------------------------------------------
    def add_ref(self, model_id: str, token: str, catalogue: str = "") -> None:
        """Mark ``model_id`` as referred to by the catalogue ``token`` (``catalogue``: its URL, for
        people reading the store; the password is never in it)."""
        note = json.dumps({"catalogue": catalogue, "time": time.time()}).encode()
        self._write_small(f"{REFS_FOLDER}/{id_hex(model_id)}/{token}", note)

    def drop_ref(self, model_id: str, token: str) -> None:
        self._delete(f"{REFS_FOLDER}/{id_hex(model_id)}/{token}")

    def refs(self, model_id: str) -> list[str]:
        return self._names(f"{REFS_FOLDER}/{id_hex(model_id)}")

    def referenced_ids(self) -> list[str]:
        """Hex ids that have a marker folder (the model itself may be gone or not yet there)."""
        return [name for name in self._names(REFS_FOLDER) if _HEX.fullmatch(name)]
