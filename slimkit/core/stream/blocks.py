"""A model compressed block by block without ever being whole in memory.

A :class:`BlockStream` is attached to a :class:`~slimkit.core.model_io.LoadedModel` whose
``model`` is a skeleton (every parameter on the meta device, see
:mod:`slimkit.core.stream.skeleton`). The small parts outside the decoder blocks (final norm,
position tables) are filled at once. The token embedding is filled only while the calibration
engine captures the first block's inputs (:meth:`embedding_loaded`), and an output head that is
not tied to it only while an evaluation computes logits (:meth:`head_loaded`): for an 8B Llama
these are 1 GB each in bfloat16, more than a block. No bundled streaming method changes either,
so both are copied across from the input when the output is finished. Each block is filled from
the input's memory-mapped shards when a method's walk reaches it (:meth:`load_block`), written
to its own output shard as soon as the method is done with it, and emptied again
(:meth:`store_block`). A block visited a second time is read back
from what was written, so a method may walk the blocks twice; a block a method never visits is
copied unchanged. The calibration engine and :meth:`MethodContext.blocks` drive this walk:
a method that walks the model with either streams without knowing it.

An evaluation reads the model without changing it: :meth:`visit_block` fills a block for its
turn and :meth:`release_block` empties it again, writing nothing; :meth:`head_loaded` fills the
head for the computation that needs it (see :mod:`slimkit.core.stream.forward`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import nn

from slimkit.core.errors import ModelLoadError
from slimkit.core.stream.checkpoint import Checkpoint
from slimkit.core.stream.skeleton import materialise, missing, release, retie, stored_entries
from slimkit.core.stream.writer import ShardWriter


#: a tensor outside the blocks at least this large is written as a part of its own by ``finish``
OWN_PART_BYTES = 64 * 2**20


@dataclass
class BlockStream:
    """A model opened block by block: the input's shards, the output's, and the skeleton between
    them whose blocks are filled in their turn (``LoadedModel.stream``; see the module docstring)."""

    model: nn.Module
    source: Checkpoint
    writer: ShardWriter | None
    block_names: tuple[str, ...]
    dtype: torch.dtype
    device: torch.device
    head: str | None = None
    #: the token embedding, filled only inside :meth:`embedding_loaded` (``None``: filled at open,
    #: as when its weight is the alias of another tensor)
    embedding: str | None = None
    aliases: dict[str, str] = field(default_factory=dict)
    stored: set[str] = field(default_factory=set)
    #: what :meth:`finish` wrote: the ``modules`` section when slimkit modules replaced layers
    section: dict[str, Any] | None = None
    finished: bool = False
    #: called with a note once the first block is done (its time and the run's peak memory so far)
    progress: Any = None
    _started: float | None = None
    _filled: dict[int, list[nn.Module]] = field(default_factory=dict)  # block module id -> modules filled
    #: per-block checkpoints (see :mod:`slimkit.core.stream.resume`): the step's key, whether its
    #: method can resume, and what ``progress.json`` says of the blocks finished so far
    key: str | None = None
    resumable: bool = False
    done: dict[str, Any] = field(default_factory=dict)
    hidden_after: str | None = None
    run_id: str | None = None

    @property
    def out(self) -> ShardWriter:
        if self.writer is None:
            raise RuntimeError("the stream has no output folder yet (bind() it first)")
        return self.writer

    @property
    def output(self) -> Path:
        return self.out.folder

    def bind(self, folder: Path, key: str | None = None, *, resumable: bool = False,
             run_id: str | None = None) -> str | None:
        """Write the blocks into ``folder`` (created with the first block). With ``resumable`` and a
        ``progress.json`` of the same step ``key`` there, the blocks it lists are kept (a resumed
        run starts after them): returns the id of the run that wrote them. Else the folder is
        emptied first and ``None`` returned."""
        import shutil

        from slimkit.core.stream.resume import read_progress

        self.writer = ShardWriter(folder)
        self.key, self.resumable, self.run_id = key, resumable, run_id
        progress = read_progress(folder, key) if resumable and key else None
        if progress is None:
            shutil.rmtree(folder, ignore_errors=True)
            return None
        self.done = dict(progress.get("blocks", {}))
        self.hidden_after = progress.get("hidden_after")
        for name in self.done:  # their shards are whole (progress.json is written after them)
            part = self._part(name)
            written = Checkpoint.open(folder, files=[self.writer.part_file(part).name])
            self.writer.record(part, written.read(list(written.tensors)))
        return str(progress.get("run_id") or "") or None

    def restorable(self) -> int:
        """How many leading blocks a resumed calibration walk can skip: those finished, up to the
        one whose outputs were saved as the next block's inputs (0 when nothing can be skipped)."""
        if self.hidden_after not in self.block_names:
            return 0
        count = self.block_names.index(self.hidden_after) + 1
        return count if all(name in self.done for name in self.block_names[:count]) else 0

    def restore_block(self, block: Any) -> dict[str, Any]:
        """Take a finished block as written (its layers' shapes; weights stay on disk) and return
        what the method noted about it."""
        from slimkit.core.stream.resume import restore_structure

        entry = self.done[block.name]
        restore_structure(block.module, entry.get("shape", {}), self.dtype)
        self.stored.add(block.name)
        return dict(entry.get("record", {}))

    def hidden(self) -> torch.Tensor:
        """The saved inputs of the first block a resumed walk computes."""
        from slimkit.core.stream.resume import load_hidden

        return load_hidden(self.output)

    def _part(self, block_name: str) -> str:
        return f"block-{self.block_names.index(block_name):05d}"

    def _outer_modules(self) -> list[tuple[str, nn.Module]]:
        """The smallest submodules holding every tensor outside the blocks (not the head, not the
        token embedding)."""
        inside = set(self.block_names) | {name for name in (self.head, self.embedding) if name}
        found: list[tuple[str, nn.Module]] = []

        def visit(prefix: str, module: nn.Module) -> None:
            for name, child in module.named_children():
                path = f"{prefix}{name}"
                if path in inside:
                    continue
                if any(b.startswith(path + ".") for b in inside):
                    visit(path + ".", child)
                else:
                    found.append((path, child))

        visit("", self.model)
        return found

    def check(self) -> None:
        """Every tensor the skeleton needs is in the input, with its shape: checked before work."""
        expected = {name: tuple(t.shape) for name, _, _, t in stored_entries(self.model) if t.is_meta}
        for alias in self.aliases:
            expected.pop(alias, None)
        absent = [name for name in expected if name not in self.source]
        if absent:
            raise ModelLoadError(
                f"{self.source.folder} has no tensor {absent[0]} ({len(absent)} missing): its names do not follow "
                f"{type(self.model).__name__}'s; load it once without streaming and save it")
        wrong = [n for n, shape in expected.items() if self.source.tensors[n].shape != shape]
        if wrong:
            raise ModelLoadError(f"{self.source.folder}: {wrong[0]} is {self.source.tensors[wrong[0]].shape} in the "
                                 f"weights but {expected[wrong[0]]} in config.json")

    def load_outer(self) -> None:
        """Fill everything outside the blocks but the head and the token embedding (norms,
        position tables)."""
        for name, module in self._outer_modules():
            self._fill(module, f"{name}.", self.source)
        retie(self.model, self.aliases)

    def _fill(self, module: nn.Module, prefix: str, checkpoint: Checkpoint) -> None:
        keys = [key for key in missing(module, prefix) if key not in self.aliases]
        self._filled.setdefault(id(module), []).extend(materialise(module, prefix, checkpoint.read(keys), self.device))

    def _empty(self, module: nn.Module) -> None:
        """Release ``module`` and every module filled under it, also those a method took out of
        the model (a replaced linear a list of layer references still holds on to)."""
        release(module)
        for owner in self._filled.pop(id(module), []):
            release(owner)

    def load_block(self, block: Any) -> None:
        """Fill ``block`` (a :class:`~slimkit.core.architecture.BlockLayout`): from the input, or
        from what was written for it if a walk stored it before."""
        if self._started is None:
            import time

            self._started = time.perf_counter()
        if block.name in self.stored:
            written = Checkpoint.open(self.output, files=[self.out.part_file(self._part(block.name)).name])
            self._fill(block.module, f"{block.name}.", written)
        else:
            self._fill(block.module, f"{block.name}.", self.source)

    def visit_block(self, block: Any) -> None:
        """Fill ``block`` to read it, not to change it (an evaluation's walk): as :meth:`load_block`
        does, from what was written for it if a walk stored it; :meth:`release_block` empties it
        again and writes nothing."""
        self.check_open("read a block")
        self.load_block(block)

    def release_block(self, block: Any) -> None:
        """Empty ``block`` (after :meth:`visit_block`) without writing anything."""
        self._empty(block.module)

    @contextlib.contextmanager
    def _loaded(self, name: str | None, what: str) -> Iterator[None]:
        """Module ``name`` filled from the input inside the ``with`` block only, ties joined; left
        as it is when there is none or it is filled already (a ``with`` around it filled it)."""
        self.check_open(f"read the {what}")
        module = self.model.get_submodule(name) if name else None
        if module is None or not any(t.is_meta for *_, t in stored_entries(module)):
            yield
            return
        self._fill(module, f"{name}.", self.source)
        retie(self.model, self.aliases)
        try:
            yield
        finally:
            self._empty(module)
            retie(self.model, self.aliases)

    def embedding_loaded(self) -> contextlib.AbstractContextManager[None]:
        """The token embedding filled inside the ``with`` block only (the calibration engine's
        capture of the first block's inputs). No compression step changes it: the input's
        tensors are the embedding's whatever was written."""
        return self._loaded(self.embedding, "token embedding")

    @contextlib.contextmanager
    def head_loaded(self) -> Iterator[None]:
        """The output head filled inside the ``with`` block only: an untied head from the input
        (no compression step changes it), a tied one with the embedding it shares."""
        with self._loaded(self.head, "output head") if self.head else self.embedding_loaded():
            yield

    def check_open(self, what: str) -> None:
        """Raise a clear :class:`ModelLoadError` (``what``: the operation refused) if :meth:`finish`
        already emptied the skeleton."""
        if self.finished:  # finish() emptied the skeleton and the parts were renamed into the output
            raise ModelLoadError(f"cannot {what} of the streamed model from {self.source.folder}: its walk was "
                                 "finished and its output saved; open the saved folder streamed again to read it")

    def store_block(self, block: Any, record: dict[str, Any] | None = None, hidden: torch.Tensor | None = None) -> None:
        """Write ``block``'s tensors to its output shard, then empty it. For a resumable step,
        ``record`` (what the method noted about the block) and ``hidden`` (the next block's inputs)
        go into its checkpoint."""
        prefix = f"{block.name}."
        tensors = {prefix + key: value for key, value in block.module.state_dict().items()}
        self.out.write(self._part(block.name), tensors)
        if self.resumable and self.key is not None:
            from slimkit.core.stream.resume import save_hidden, structure, write_progress

            if hidden is not None:
                save_hidden(self.output, hidden)
                self.hidden_after = block.name
            self.done[block.name] = {"record": record or {}, "shape": structure(block.module)}
            write_progress(self.output, {"key": self.key, "run_id": self.run_id, "blocks": self.done,
                                         "hidden_after": self.hidden_after})
        first = not self.stored
        self.stored.add(block.name)
        self._empty(block.module)
        if first and self._started is not None and self.progress is not None:
            self._measured()

    def _measured(self) -> None:
        """Say what the first block took and what the whole walk will take at that pace."""
        import time

        from slimkit.core.contracts import ProgressEvent
        from slimkit.core.memory import peak_rss_bytes
        from slimkit.core.stream.cost import gib

        seconds = time.perf_counter() - (self._started or 0.0)
        total = seconds * len(self.block_names)
        pace = f"{total / 60:.1f} min" if total >= 60 else f"{total:.0f} s"
        self.progress(ProgressEvent("measured", 0, 0, f"first block {seconds:.1f} s, peak {gib(peak_rss_bytes())} "
                                                      f"resident: about {pace} for {len(self.block_names)} blocks"))

    def finish(self) -> dict[str, Any] | None:
        """Write what the walk did not: blocks never visited (unchanged), the parts outside the
        blocks and ``config.json``; name the shards. Returns the ``modules`` section if slimkit
        modules replaced layers (``None``: a plain Hugging Face folder)."""
        from slimkit.core.storage import SHARDED_FORMAT, has_replaced_modules, layer_record, replaced_modules

        for name in self.block_names:
            if name not in self.stored:
                block = self.model.get_submodule(name)
                self._fill(block, f"{name}.", self.source)
                tensors = {f"{name}.{key}": value for key, value in block.state_dict().items()}
                self.out.write(self._part(name), tensors)
                self.stored.add(name)
                self._empty(block)
        unique, aliases = self.state_keys()
        block_prefixes = tuple(f"{name}." for name in self.block_names)
        state = self.model.state_dict()
        outer: dict[str, torch.Tensor] = {}
        small: list[str] = []
        for key in (k for k in unique if not k.startswith(block_prefixes)):
            if not state[key].is_meta:  # filled at open (norms, position tables)
                outer[key] = state[key]
            elif self.source.tensors[key].nbytes < OWN_PART_BYTES:
                small.append(key)
            else:  # the embedding, the head: a part each, one in memory at a time (a write holds it twice)
                self.out.write(f"outer-{len(self.out.parts)}", self._input_tensors([key]))
        self.out.write("outer", {**outer, **self._input_tensors(small)})
        from slimkit.core.stream.resume import HIDDEN_FILE, PROGRESS_FILE

        for checkpoint_file in (HIDDEN_FILE, PROGRESS_FILE):  # the step is done: not part of the model
            (self.output / checkpoint_file).unlink(missing_ok=True)
        replaced = has_replaced_modules(self.model)
        weight_map = self.out.finish(slimkit_modules=replaced)
        config: Any = self.model.config
        config.save_pretrained(self.output)
        generation = getattr(self.model, "generation_config", None)
        if generation is not None:
            try:
                generation.save_pretrained(self.output)
            except Exception:  # a generation config that does not validate is not the model's weights
                pass
        if replaced:
            self.section = {
                "format": SHARDED_FORMAT, "files": sorted(set(weight_map.values())),
                "layers": {name: layer_record(m) for name, m in replaced_modules(self.model).items()},
                "aliases": aliases, "sha256": dict(self.out.sha256), "bytes": self.out.total_bytes,
            }
        self.finished = True
        release(self.model)
        return self.section

    def _input_tensors(self, keys: list[str]) -> dict[str, torch.Tensor]:
        """Tensors ``keys`` read from the input, float ones in the model's dtype (tensors no
        compression step changed: the token embedding, the head)."""
        return {key: value.to(self.dtype) if value.is_floating_point() else value
                for key, value in self.source.read(keys).items()}

    def state_keys(self) -> tuple[list[str], dict[str, str]]:
        """The skeleton's state-dict keys stored once, and the keys that are another's (tied)."""
        first: dict[int, str] = {}
        unique: list[str] = []
        aliases: dict[str, str] = {}
        for key, value in self.model.state_dict(keep_vars=True).items():
            if id(value) in first:
                aliases[key] = first[id(value)]
            else:
                first[id(value)] = key
                unique.append(key)
        return unique, aliases


def streamed_content_id(model: nn.Module, checkpoint: Checkpoint) -> str:
    """The content id (:func:`slimkit.core.provenance.content_id`) of ``model``'s skeleton with the
    weights in ``checkpoint``, read one tensor at a time (float tensors cast to the skeleton's
    dtypes, as a load in that precision would): the same id the model would have whole in memory."""
    import hashlib

    from slimkit.core.provenance import add_to_content_id

    digest = hashlib.sha256()
    state = model.state_dict(keep_vars=True)
    source = {id(value): key for key, value in reversed(list(state.items()))}
    for name in sorted(state):
        meta = state[name]
        stored = source[id(meta)]
        tensor = checkpoint.read([stored])[stored] if stored in checkpoint else meta
        if tensor.is_floating_point() and tensor.dtype != meta.dtype:
            tensor = tensor.to(meta.dtype)  # as a load would give it (the skeleton has the loaded dtypes)
        add_to_content_id(digest, name, tensor)
    return "sha256:" + digest.hexdigest()


def block_names(blocks: Iterable[Any]) -> tuple[str, ...]:
    return tuple(block.name for block in blocks)
