"""An fsspec store: any URL fsspec opens (``s3://bucket/prefix``, ``gs://``, ``memory://``...).

Layout: ``<url>/<id hex>/<upload>/<files>`` and ``<url>/<id hex>/slimkit-manifest.json``. Each
upload writes its files under a fresh ``<upload>`` prefix and the manifest (which names that
prefix) last: object stores have no rename, so the manifest's appearance is the commit, racing
uploads never mix files, and a model without a manifest is not there. Readers download into a
staging folder of a local cache, check every file's sha256, and only then rename it into the
cache (``SLIMKIT_ARTIFACT_CACHE``, default the user cache folder).
"""

from __future__ import annotations

import contextlib
import shutil
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any, Callable, TypeVar

from slimkit.core.artifact_store.base import ArtifactStore
from slimkit.core.artifact_store.manifest import ArtifactStoreError, ChecksumError, Manifest, id_hex
from slimkit.core.catalogue.artifacts import INCOMING_PREFIX, MANIFEST_FILE, cache_dir
from slimkit.core.failures import describe

T = TypeVar("T")
#: Fail fast on an unreachable endpoint (botocore would retry for about a minute by default).
_S3_DEFAULTS: dict[str, Any] = {"config_kwargs": {"connect_timeout": 5, "read_timeout": 60,
                                                  "retries": {"total_max_attempts": 2, "mode": "standard"}}}


class FsspecStore(ArtifactStore):
    """Models as objects under an fsspec URL, fetched into a verified local cache to be opened."""

    def __init__(self, url: str, **storage_options: Any) -> None:
        import fsspec

        self.url = url.rstrip("/")
        protocol = self.url.partition("://")[0].lower()
        options = {**(_S3_DEFAULTS if protocol in {"s3", "s3a"} else {}), **storage_options}
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url, **options)
        except (ImportError, ValueError) as error:  # no such protocol, or its package missing
            raise ArtifactStoreError(f"artifact store {self.url}: {describe(error)}") from None
        if protocol in {"s3", "s3a"}:
            self.fs.retries = 2  # s3fs's own retry loop, on top of botocore's
        self.root = self.root.rstrip("/")
        self.cache = cache_dir(self.url)

    def _path(self, relative: str) -> str:
        return f"{self.root}/{relative}" if relative else self.root

    def _call(self, what: str, action: Callable[[], T]) -> T:
        """One line for whatever the file system raised (unreachable, denied, full)."""
        try:
            return action()
        except (FileNotFoundError, ArtifactStoreError):
            raise
        except Exception as error:
            raise ArtifactStoreError(f"artifact store {self.url}: cannot {what}: {describe(error)}") from None

    def _write_small(self, relative: str, data: bytes) -> None:
        self._call(f"write {relative}", lambda: self.fs.pipe_file(self._path(relative), data))

    def _delete(self, relative: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._call(f"remove {relative}", lambda: self.fs.rm_file(self._path(relative)))

    def _names(self, relative: str) -> list[str]:
        path = self._path(relative)
        self.fs.invalidate_cache(path)
        try:
            entries = self._call(f"list {relative or '/'}", lambda: self.fs.ls(path, detail=False))
        except FileNotFoundError:
            return []
        names = (str(entry).rstrip("/").rpartition("/")[2] for entry in entries)
        return sorted(name for name in names if name and not name.startswith("."))

    def location(self, model_id: str) -> str:
        return f"{self.url}/{id_hex(model_id)}"

    def manifest(self, model_id: str) -> Manifest | None:
        path = self._path(f"{id_hex(model_id)}/{MANIFEST_FILE}")
        try:
            data = self._call(f"read the manifest of {id_hex(model_id)[:12]}", lambda: self.fs.cat_file(path))
        except FileNotFoundError:
            return None
        return Manifest.from_bytes(data, f"{self.url}/{id_hex(model_id)}/{MANIFEST_FILE}")

    def ids(self) -> list[str]:
        return [name for name in self._names("") if len(name) == 64 and self.manifest(name) is not None]

    def check_writable(self) -> None:
        probe = f"{INCOMING_PREFIX}probe-{uuid.uuid4().hex[:8]}"
        self._call("write (checked before any work)", lambda: self.fs.pipe_file(self._path(probe), b""))
        self._delete(probe)

    def publish(self, folder: Path, model_id: str, token: str, name: str | None = None) -> Path:
        hex_id = id_hex(model_id)
        self.add_ref(model_id, token)
        if self.manifest(model_id) is None:
            manifest = Manifest.of_folder(folder, model_id, name)
            manifest.folder = uuid.uuid4().hex[:12]
            prefix = f"{hex_id}/{manifest.folder}"
            try:
                for relative in manifest.files:
                    self._call(f"upload {relative}",
                               partial(self.fs.put_file, str(folder / relative), self._path(f"{prefix}/{relative}")))
                self._write_small(f"{hex_id}/{MANIFEST_FILE}", manifest.to_bytes())  # the commit
            except BaseException:
                with contextlib.suppress(Exception):  # the cause is what to report
                    self.fs.rm(self._path(prefix), recursive=True)
                raise
            manifest.write(folder)
        else:  # an identical run uploaded it first; this local copy (its slimkit.json may differ in
            # the run's own details, never in the weights) is checked against its own manifest
            Manifest.of_folder(folder, model_id, name).write(folder)
        return self._settle(folder, hex_id)

    def _settle(self, folder: Path, hex_id: str) -> Path:
        """Move a complete local folder into the cache as ``<id hex>`` (a concurrent one wins)."""
        final = self.cache / hex_id
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            folder.rename(final)
        except OSError:
            if not (final / MANIFEST_FILE).is_file():
                raise
            shutil.rmtree(folder, ignore_errors=True)
        return final

    def open(self, model_id: str, label: str) -> Path:
        final = self.cache / id_hex(model_id)
        local = Manifest.read(final)
        if local is not None:
            local.verify(final, f"{label} (local copy of {self.location(model_id)})")
            return final
        self.cache.mkdir(parents=True, exist_ok=True)
        staging = self.cache / f".{id_hex(model_id)}.partial-{uuid.uuid4().hex[:8]}"
        self._download(model_id, staging, label)
        return self._settle(staging, id_hex(model_id))

    def copy_to(self, model_id: str, target: Path, label: str) -> Path:
        from slimkit.core.atomic import write_staged

        cached = self.cache / id_hex(model_id)
        local = Manifest.read(cached)

        def fill(staging: Path) -> None:
            if local is None:
                self._download(model_id, staging, label)
                return
            # fetched here before (what open() trusts too): checked and copied, not downloaded again
            local.verify(cached, f"{label} (local copy of {self.location(model_id)})")
            shutil.copytree(cached, staging, dirs_exist_ok=True)

        write_staged(target, "folder", fill, what="cannot copy the model to")
        return target

    def _download(self, model_id: str, staging: Path, label: str) -> None:
        """Every file of the model into ``staging``, checked; ``staging`` is removed on failure."""
        manifest = self.manifest(model_id)
        if manifest is None:
            raise ArtifactStoreError(f"model {label} is not in the artifact store {self.url}")
        prefix = f"{id_hex(model_id)}/{manifest.folder}"
        try:
            for relative in manifest.files:
                (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                self._call(f"download {relative} of model {label}",
                           partial(self.fs.get_file, self._path(f"{prefix}/{relative}"), str(staging / relative)))
            manifest.verify(staging, f"{label} in the artifact store {self.url}")
            manifest.write(staging)
        except BaseException as error:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(error, FileNotFoundError):
                raise ChecksumError(f"model {label}: a file listed in its manifest is missing from "
                                    f"{self.location(model_id)}") from None
            raise

    def remove(self, model_id: str) -> bool:
        hex_id = id_hex(model_id)
        manifest = self.manifest(model_id)
        if manifest is None:
            return False
        self._delete(f"{hex_id}/{MANIFEST_FILE}")  # uncommitted first: readers now see no model
        if self.refs(model_id):  # a run published it again meanwhile: it stays
            self._write_small(f"{hex_id}/{MANIFEST_FILE}", manifest.to_bytes())
            return False
        with contextlib.suppress(FileNotFoundError):
            self._call(f"remove {hex_id}", lambda: self.fs.rm(self._path(hex_id), recursive=True))
        return True

    def stale_incoming(self, grace_s: float) -> list[str]:
        """Uploads whose manifest never came (an id prefix without manifest), older than ``grace_s``."""
        stale = []
        for name in self._names(""):
            if len(name) != 64 or self.manifest(name) is not None:
                continue
            found = self._call(f"list {name}", partial(self.fs.find, self._path(name), detail=True))
            modified = [_mtime(info) for info in found.values()]
            if all(m is not None and time.time() - m > grace_s for m in modified):
                stale.append(name)
        return stale

    def remove_incoming(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._call(f"remove {name}", lambda: self.fs.rm(self._path(name), recursive=True))


def _mtime(info: dict[str, Any]) -> float | None:
    """An object's modification time from fsspec's ``info`` (its keys differ by file system)."""
    for key in ("LastModified", "mtime", "created", "last_modified", "updated"):
        value = info.get(key)
        if value is None:
            continue
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
        with contextlib.suppress(TypeError, ValueError):
            return float(value)
    return None
