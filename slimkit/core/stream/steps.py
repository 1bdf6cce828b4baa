"""How a recipe run treats a model that is streamed rather than held in memory.

The runner asks its model flow five things: the id of the input, a model reopened from a folder
(a reused step's result), the model a step works on, the id of what the step made, and to save the
final result. :class:`InMemory` answers them for a model in memory; :class:`Streamed` for one
opened block by block: each step reads the previous step's shards (the input's for the first) and
writes its own into a work folder beside the output named after the step's key; the ids are
computed from the shards one tensor at a time (equal to the ids the same weights would have in
memory); the last step's folder becomes the output, renamed into place whole.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimkit.core.errors import RecipeError
from slimkit.core.failures import FileSystemError, os_cause
from slimkit.core.model_io import PROVENANCE_FILE, LoadedModel, load_model, save_model
from slimkit.core.provenance import content_id
from slimkit.core.stream.blocks import streamed_content_id
from slimkit.core.stream.checkpoint import Checkpoint


class InMemory:
    """The flow of a model held whole in memory (what a run does unless it streams)."""

    streamed = False

    def identify(self, loaded: LoadedModel) -> str:
        return content_id(loaded.model)

    def reopen(self, location: str) -> LoadedModel:
        return load_model(location)

    def begin(self, loaded: LoadedModel, key: str, resumable: bool = False) -> LoadedModel:
        return loaded

    def end(self, loaded: LoadedModel) -> str:
        loaded.path = None  # the in-memory model no longer matches any file
        return content_id(loaded.model)

    def save(self, loaded: LoadedModel, target: Path, provenance: dict[str, Any], overwrite: bool) -> None:
        save_model(loaded, target, provenance, overwrite=overwrite)


@dataclass
class Streamed:
    """The flow of a model opened block by block (see the module docstring)."""

    host: Any
    target: Path
    dtype: Any = "float32"
    device: Any = None
    progress: Any = None
    cat: Any = None
    run_id: str | None = None
    streamed = True

    def __post_init__(self) -> None:
        self._spent: list[Path] = []  # earlier steps' outputs, removed once the next step is done
        self._folders: list[Path] = []  # every work folder this run wrote into

    def cleanup(self) -> None:
        """Remove every work folder of this run that was not placed as its output (a failed or
        interrupted run leaves nothing behind)."""
        for folder in self._folders:
            shutil.rmtree(folder, ignore_errors=True)

    def open(self, spec: Any) -> LoadedModel:
        from slimkit.core.stream.opening import open_streamed

        return open_streamed(spec, self.host, dtype=self.dtype, device=self.device)

    def identify(self, loaded: LoadedModel) -> str:
        stream = loaded.stream
        return streamed_content_id(loaded.model, stream.source)

    def reopen(self, location: str) -> LoadedModel:
        """A saved result, streamed to be read: its quantized or low-rank layers admitted."""
        from slimkit.core.stream.opening import open_streamed

        return open_streamed(location, self.host, dtype=self.dtype, device=self.device, replaced=True)

    def work_folder(self, key: str) -> Path:
        digest = key.rpartition(":")[2]
        return self.target.parent / f".{self.target.name}.stream-{digest[:16]}"

    def begin(self, loaded: LoadedModel, key: str, resumable: bool = False) -> LoadedModel:
        """The model the step with ``key`` works on: ``loaded`` if nothing wrote it yet, else the
        previous step's output reopened. A ``resumable`` step finds the blocks an interrupted run of
        it finished in its work folder and starts after them; that run becomes part of this one."""
        stream = loaded.stream
        if stream.finished:
            if stream.section is not None:
                raise RecipeError([f"a step after {stream.output.name}'s quantized or low-rank layers cannot "
                                   "stream: put quantization and low-rank factorisation last"], "streamed run")
            self._spent.append(stream.output)
            previous, loaded = loaded, self.open(stream.output)
            loaded.tokenizer, loaded.source = previous.tokenizer, previous.source
            stream = loaded.stream
        folder = self.work_folder(key)
        if not resumable:
            self._folders.append(folder)  # removed if the run fails: there is nothing to resume
        interrupted = stream.bind(folder, key, resumable=resumable, run_id=self.run_id)
        stream.progress = self.progress
        if interrupted is not None:
            if self.progress is not None:
                from slimkit.core.contracts import ProgressEvent

                self.progress(ProgressEvent("resume", 0, 0, f"{len(stream.done)} of {len(stream.block_names)} blocks "
                                                            f"were finished by an interrupted run: resuming after them"))
            if self.cat is not None and self.run_id is not None and interrupted != self.run_id:
                self.cat.absorb_run(interrupted, self.run_id)
        return loaded

    def end(self, loaded: LoadedModel) -> str:
        stream = loaded.stream
        stream.finish()
        written = Checkpoint.open(stream.output, files=stream.out.files)
        child = streamed_content_id(loaded.model, written)
        for folder in self._spent:
            shutil.rmtree(folder, ignore_errors=True)
        self._spent.clear()
        return child

    def save(self, loaded: LoadedModel, target: Path, provenance: dict[str, Any], overwrite: bool) -> None:
        from slimkit.core.storage import LEGACY_SECTION, SECTION, section_of

        stream = loaded.stream
        if not stream.finished:  # every step was reused: copy the catalogued result
            folder = self.target.parent / f".{self.target.name}.copy-{uuid.uuid4().hex[:8]}"
            shutil.copytree(str(loaded.path), folder)
        else:
            folder = stream.output
        self._folders.append(folder)  # if saving fails, nothing of it stays behind
        provenance.pop(LEGACY_SECTION, None)
        provenance.pop(SECTION, None)
        section = stream.section if stream.finished else section_of(loaded.provenance or {})
        if section is not None:
            provenance[SECTION] = section
        try:
            if loaded.tokenizer is not None:
                loaded.tokenizer.save_pretrained(folder)
            (folder / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
            place(folder, target, overwrite)
        except OSError as error:
            raise FileSystemError(f"cannot save the model to {target}: {os_cause(error)}") from error
        loaded.path = target

    def discard(self, loaded: LoadedModel | None) -> None:
        """Remove the work folder of ``loaded``'s stream (a step that will not be resumed)."""
        if loaded is not None and loaded.stream is not None and loaded.stream.writer is not None:
            shutil.rmtree(loaded.stream.output, ignore_errors=True)


def place(folder: Path, target: Path, overwrite: bool) -> None:
    """Rename the finished ``folder`` to ``target``, replacing an existing one (``overwrite``)
    only now, and putting it back if the rename fails."""
    if target.exists() and not overwrite:
        raise FileExistsError(17, "exists", str(target))
    if target.exists():
        retired = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        target.rename(retired)
        try:
            os.rename(folder, target)
        except BaseException:
            retired.rename(target)
            raise
        shutil.rmtree(retired, ignore_errors=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(folder, target)
