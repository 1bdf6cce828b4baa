"""A folder store: a local or shared (NFS-style) folder, each model in ``<root>/<id hex>``.

A model folder is made complete beside its final name (a hidden ``.incoming-`` folder in the
store), its manifest written inside, and then renamed into place: a rename within one file
system is atomic, and it fails when another writer renamed the same model first, which then
wins (same id: same weights). Models are opened in place, after every file is checked.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from pathlib import Path

from slimkit.core.artifact_store.base import ArtifactStore
from slimkit.core.artifact_store.manifest import ArtifactStoreError, ChecksumError, Manifest, id_hex
from slimkit.core.catalogue.artifacts import INCOMING_PREFIX, MANIFEST_FILE, WORK_FOLDER, is_store_entry
from slimkit.core.failures import describe_os_error


def _existing_ancestor(path: Path) -> Path:
    return next((p for p in (path, *path.parents) if p.exists()), Path("/"))


class FolderStore(ArtifactStore):
    """Models as folders under ``root``, opened in place."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    def _write_small(self, relative: str, data: bytes) -> None:
        path = self.root / relative
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            staging = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
            staging.write_bytes(data)
            os.replace(staging, path)
        except OSError as error:
            with contextlib.suppress(OSError):
                staging.unlink(missing_ok=True)
            raise ArtifactStoreError(f"cannot write to the artifact store {self.root}: {describe_os_error(error)}") \
                from None

    def _delete(self, relative: str) -> None:
        path = self.root / relative
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # the marker folder, once its last marker is gone
            path.parent.rmdir()

    def _names(self, relative: str) -> list[str]:
        folder = self.root / relative
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []

    def location(self, model_id: str) -> str:
        return str(self.root / id_hex(model_id))

    def manifest(self, model_id: str) -> Manifest | None:
        return Manifest.read(self.root / id_hex(model_id))

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if is_store_entry(p) and (p / MANIFEST_FILE).is_file())

    def check_writable(self) -> None:
        where = _existing_ancestor(self.root)
        if not where.is_dir():
            raise ArtifactStoreError(f"artifact store {self.root} cannot be created: {where} is a file, not a folder")
        probe = where / f"{INCOMING_PREFIX}probe-{uuid.uuid4().hex[:8]}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise ArtifactStoreError(f"artifact store {self.root} is not writable: {describe_os_error(error)}") \
                from None

    def publish(self, folder: Path, model_id: str, token: str, name: str | None = None) -> Path:
        final = self.root / id_hex(model_id)
        self.add_ref(model_id, token)
        if (final / MANIFEST_FILE).is_file():  # an identical run published it first
            shutil.rmtree(folder, ignore_errors=True)
            return final
        stage = folder
        try:
            if folder.parent.resolve() != self.root.resolve():  # elsewhere: copied in beside its final name
                stage = self.root / f"{INCOMING_PREFIX}{uuid.uuid4().hex[:8]}"
                shutil.copytree(folder, stage)
            Manifest.of_folder(stage, model_id, name).write(stage)
            try:
                os.rename(stage, final)
            except OSError:
                if not (final / MANIFEST_FILE).is_file():
                    raise
                shutil.rmtree(stage, ignore_errors=True)  # lost the race to an identical model: fine
        except OSError as error:
            if stage != folder:
                shutil.rmtree(stage, ignore_errors=True)
            raise ArtifactStoreError(f"cannot publish model {id_hex(model_id)[:12]} to the artifact store "
                                     f"{self.root}: {describe_os_error(error)}") from None
        if folder.exists() and folder != stage:
            shutil.rmtree(folder, ignore_errors=True)
        return final

    def open(self, model_id: str, label: str) -> Path:
        final = self.root / id_hex(model_id)
        manifest = Manifest.read(final)
        if manifest is None and final.is_dir():  # a model folder without its manifest: not whole
            raise ChecksumError(f"model {label} in the artifact store {self.root}: its manifest {MANIFEST_FILE} "
                                "is missing (a damaged or half-removed copy)")
        if manifest is None:
            raise ArtifactStoreError(f"model {label} is not in the artifact store {self.root}")
        manifest.verify(final, f"{label} in the artifact store {self.root}")
        return final

    def copy_to(self, model_id: str, target: Path, label: str) -> Path:
        source = self.open(model_id, label)
        from slimkit.core.atomic import write_staged

        write_staged(target, "folder", lambda staging: shutil.copytree(source, staging, dirs_exist_ok=True),
                     what="cannot copy the model to")
        return target

    def remove(self, model_id: str) -> bool:
        final = self.root / id_hex(model_id)
        retired = self.root / f".deleting-{id_hex(model_id)}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(final, retired)
        except FileNotFoundError:
            return False
        if self.refs(model_id):  # a run published it again meanwhile: it stays
            os.rename(retired, final)
            return False
        shutil.rmtree(retired, ignore_errors=True)
        for export in self.root.glob(f"{id_hex(model_id)}?*"):  # exports written beside it, if any
            self.remove_incoming(export.name)
        return True

    def stale_incoming(self, grace_s: float) -> list[str]:
        if not self.root.is_dir():
            return []
        now = time.time()
        work = self.root / WORK_FOLDER  # checkpoints of steps: an interrupted run resumes from them
        candidates = [*self.root.iterdir(), *(work.iterdir() if work.is_dir() else ())]
        return sorted(str(p.relative_to(self.root)) for p in candidates
                      if (INCOMING_PREFIX in p.name or p.name.startswith(".deleting-") or p.parent == work)
                      and now - _newest_mtime(p) > grace_s)

    def remove_incoming(self, name: str) -> None:
        path = self.root / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _newest_mtime(path: Path) -> float:
    """The last time anything directly in ``path`` changed (a run writing it keeps this recent)."""
    times = [path.lstat().st_mtime]
    if path.is_dir():
        times += [child.lstat().st_mtime for child in path.iterdir()]
    return max(times)
