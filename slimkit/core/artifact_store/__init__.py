"""The shared artifact store: where derived models are kept, by content id, for a whole team.

``SLIMKIT_ARTIFACTS`` (or ``slimkit --artifacts URL``) names it: a folder or ``file://`` URL is a
:class:`~slimkit.core.artifact_store.folder.FolderStore` (local or a shared mount), any other URL
an :class:`~slimkit.core.artifact_store.remote.FsspecStore` (``s3://bucket/prefix``...). Without
it, the store is the catalogue's own ``artifacts/`` folder (see
:func:`slimkit.core.catalogue.artifacts.artifact_dir`). The design: docs/artifact_store.md.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from slimkit.core.artifact_store.base import ArtifactStore
from slimkit.core.artifact_store.manifest import ArtifactStoreError, ChecksumError, Manifest, id_hex
from slimkit.core.catalogue.artifacts import artifact_dir, is_remote_url, local_path, store_url
from slimkit.core.failures import mask_secrets

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.catalogue import Catalogue

__all__ = ["ArtifactStore", "ArtifactStoreError", "ChecksumError", "Manifest", "catalogue_token", "id_hex",
           "open_store", "store_of"]


def open_store(url: str) -> ArtifactStore:
    """The store at ``url``: a folder (path or ``file://``) or any fsspec URL."""
    if is_remote_url(url):
        from slimkit.core.artifact_store.remote import FsspecStore

        return FsspecStore(url)
    from slimkit.core.artifact_store.folder import FolderStore

    return FolderStore(local_path(url))


def store_of(cat: "Catalogue") -> ArtifactStore:
    """The store ``cat``'s runs publish to: ``$SLIMKIT_ARTIFACTS``, else the catalogue's folder."""
    configured = store_url()
    if configured and is_remote_url(configured):
        return open_store(configured)
    from slimkit.core.artifact_store.folder import FolderStore

    return FolderStore(artifact_dir(cat))


def catalogue_token(cat: "Catalogue") -> str:
    """A stable name of ``cat`` for the store's reference markers: a hash of its URL, password
    removed. Clients that spell one server's URL differently get different tokens; each one's gc
    only drops its own markers, so the cost is an artifact kept longer, never one removed early."""
    return hashlib.sha256(mask_secrets(cat.url).encode()).hexdigest()[:16]
