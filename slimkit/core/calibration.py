"""The layer-wise calibration engine shared by every data-aware method.

It follows the sequential protocol of SparseGPT and GPTQ: the inputs of the first block are
captured once for all calibration samples; then the blocks are processed in order, each fed
the outputs of the previous block *as already compressed*, so later blocks see, and can correct
for, what earlier compression did. Besides the hidden states it holds one block's statistics at
a time. Statistics are accumulated in float64 wherever sums over many tokens are taken.

Use::

    engine = SequentialCalibration(model, adapter, calibration)
    for step in engine:
        stats = step.collect(step.block.linears(), ("hessian",))
        ...change step.block's weights...
    # each step's outputs are recomputed only if the block's weights were changed

:meth:`SequentialCalibration.final_hidden_states` walks the blocks without changing them and
keeps the last block's outputs: the forward pass of an evaluation on a model opened block by
block (:mod:`slimkit.core.stream.forward`).

Data-parallel (calibration data split among the ranks of a :class:`~slimkit.core.distributed.World`,
:meth:`CalibrationData.split`): each rank captures and runs its own contiguous share of the samples;
:meth:`BlockStep.collect` sums every statistic over the ranks before it returns, in the order of the
layers, so every rank holds the statistics of all samples; :meth:`BlockStep.solve_each` divides
expensive per-layer solves among the ranks; :meth:`BlockStep.all_reduce` and
:meth:`BlockStep.gather_rows` are there for what a method measures itself. Once a method is done with
a block, the ranks check that they hold the same weights (a method that used its rank's data
without reducing it is stopped there, by name).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from slimkit.core.architecture import ArchitectureAdapter, BlockLayout, LinearRef
from slimkit.core.data import CalibrationData
from slimkit.core.distributed.world import SINGLE, World
from slimkit.core.errors import ArchitectureError, DataError, DistributedError
from slimkit.core.memory import release_free_memory
from slimkit.core.statistics import (  # noqa: F401 (the engine's statistics, importable from here as before)
    STATISTICS,
    LinearStatistics,
    SharedInput,
    by_shared_input,
    drop_hessian,
    require_hessian_data,
)


class _Captured(Exception):
    """Raised by a hook to stop a forward pass once it has seen what it needed."""


def _share_equal(previous: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """``current`` with every tensor (or tuple of tensors) equal to ``previous``'s under the same
    key replaced by that object: rotary embeddings and position ids are the same for every batch
    of equal-length samples and would otherwise be stored once per batch (17 MB for 64 batches
    of 512 tokens on SmolLM2)."""

    def same(a: Any, b: Any) -> bool:
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and bool(torch.equal(a, b))
        if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) and a:
            return all(same(x, y) for x, y in zip(a, b))
        return False

    return {k: previous[k] if k in previous and same(previous[k], v) else v for k, v in current.items()}


def _output(result: Any) -> torch.Tensor:
    return result[0] if isinstance(result, (tuple, list)) else result


def _weights_version(module: nn.Module) -> tuple[tuple[int, int, tuple[int, ...]], ...]:
    # Every in-place change to a tensor bumps its version counter, and replacing a parameter
    # (structured pruning shrinks matrices) changes its identity or shape: either means the block
    # was modified and its outputs must be recomputed.
    return tuple((id(p), p._version, tuple(p.shape)) for p in module.parameters())


class BlockStep:
    """One block of the sequential pass: collect statistics, let the caller change it, move on."""

    def __init__(self, engine: "SequentialCalibration", block: BlockLayout, *, restored: dict[str, Any] | None = None) -> None:
        self.engine = engine
        self.block = block
        #: a block a resumed streamed run finished before it was interrupted: its weights are on disk,
        #: not in the module; the method skips it, taking from :attr:`record` what it noted then
        self.restored = restored is not None
        #: what the method notes about this block for its summary (JSON values): kept with the block's
        #: checkpoint in a streamed run, handed back in a resumed one
        self.record: dict[str, Any] = dict(restored or {})
        self._ready = False  # whether engine._spare holds this block's outputs for its weights
        self._version = _weights_version(block.module)

    def collect(
        self, refs: Sequence[LinearRef], statistics: Sequence[str], *, outputs: bool = True
    ) -> dict[str, LinearStatistics]:
        """Run the block over every calibration batch, accumulating statistics at the inputs of
        ``refs`` (keyed by layer name). The block's outputs are kept for the next block.

        ``outputs=False`` says the caller is about to change the block, which makes its present
        outputs useless: each batch's forward then stops as soon as every layer in ``refs`` has
        seen its input (for a Llama block with all seven projections, before ``down_proj``'s
        product, a quarter of the block's work), and :meth:`outputs` computes them afterwards."""
        unknown = set(statistics) - set(STATISTICS)
        if unknown:
            raise ValueError(f"unknown statistics {sorted(unknown)}; known: {', '.join(STATISTICS)}")
        wanted = tuple(statistics)
        stats: dict[str, LinearStatistics] = {}
        leader: dict[str, str] = {}  # layer -> the layer whose statistics it shares (itself if none)
        seen: dict[int, tuple[torch.Tensor, str]] = {}  # input tensors of the current batch, by id
        fired: set[str] = set()
        names = {ref.name for ref in refs}

        def hook(name: str, in_features: int, x: torch.Tensor) -> None:
            fired.add(name)
            first = seen.get(id(x))
            if first is not None and first[0] is not x:
                first = None
            if name not in leader:  # first batch: share with an earlier layer fed this very tensor
                leader[name] = first[1] if first is not None else name
                if leader[name] == name:
                    stats[name] = LinearStatistics(in_features, wanted=wanted)
            elif (first[1] if first is not None else name) != leader[name]:
                raise RuntimeError(f"{name} changed which layer shares its input between batches")
            if first is None:
                seen[id(x)] = (x, name)
            if leader[name] == name:
                if not torch.isfinite(x).all():
                    raise DataError(
                        f"non-finite activations (NaN or inf) at the input of {name} in the calibration pass: "
                        "the model's weights or an earlier compression step produce them; nothing was changed "
                        "in this block"
                    )
                stats[name].add(x)
            if not outputs and fired == names:
                raise _Captured

        def between_batches() -> None:
            seen.clear()
            fired.clear()

        handles = [
            ref.module.register_forward_pre_hook(
                lambda _m, args, name=ref.name, size=ref.in_features: hook(name, size, args[0]))
            for ref in refs
        ]
        try:
            self.engine._run_block(self.block.module, between_batches, write=outputs)
        finally:
            for handle in handles:
                handle.remove()
        self._ready = outputs
        self._version = _weights_version(self.block.module)
        for statistics_object in stats.values():
            statistics_object.finish()
        world = self.engine.world
        if world.distributed:  # every rank: the sums over all samples, layer by layer in refs' order
            for name in dict.fromkeys(leader[ref.name] for ref in refs if ref.name in leader):
                stats[name].reduce(world, f"the statistics of {self.block.name} ({name})")
        release_free_memory()  # per-batch temporaries: not left as heap under what the caller does next
        missing = [ref.name for ref in refs if ref.name not in leader]
        if missing:
            raise ArchitectureError(f"{', '.join(missing)} never ran during the forward pass of {self.block.name}")
        return {ref.name: stats[leader[ref.name]] for ref in refs}

    @property
    def inputs(self) -> torch.Tensor:
        """The block's inputs on this rank's calibration samples (all of them in one process),
        ``[samples, seq_len, hidden]``."""
        return self.engine._hidden

    @property
    def world(self) -> World:
        """The ranks the calibration samples are divided among (:data:`SINGLE`: one process)."""
        return self.engine.world

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """``tensor`` summed (``op``: also ``"max"``, ``"min"``) over the ranks, in place: for what a
        method measures on :attr:`inputs` or with its own hooks. A no-op in one process."""
        return self.engine.world.all_reduce(tensor, op, f"a reduction in {self.block.name}")

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """The ranks' ``tensor``s (rows of their own samples) concatenated in rank order, which is
        sample order. ``tensor`` itself in one process."""
        return self.engine.world.gather_rows(tensor, f"gathering rows in {self.block.name}")

    def solve_each(self, items: Sequence[Any], solve: Callable[[Any], tuple[torch.Tensor, ...]],
                   cost: Callable[[Any], float], apply: Callable[[Any, tuple[torch.Tensor, ...]], None]) -> None:
        """``apply(item, solve(item))`` for every item in order (``solve`` gives a tuple of
        tensors), the solves divided among the ranks by ``cost`` and every result broadcast, then
        applied on every rank (see :meth:`~slimkit.core.distributed.World.solve_each`). What
        ``solve`` reads must be the same on every rank (the reduced statistics, the block's
        weights); ``apply`` changes the block. A rank frees the Hessian of each :class:`SharedInput`
        another rank solves before it solves its own (its memory then is what one process needs)."""
        self.engine.world.solve_each(items, solve, cost, apply, f"the solves of {self.block.name}", drop=drop_hessian)

    def outputs(self) -> torch.Tensor:
        """The block's outputs on this rank's calibration samples (all of them in one process;
        ``[samples, seq_len, hidden]``), recomputed if its weights changed. The tensor is reused: it
        becomes the next block's inputs, then the buffer the block after that writes to, so copy
        what must be kept."""
        if not self._ready or _weights_version(self.block.module) != self._version:
            self.engine._run_block(self.block.module, write=True)
            self._ready = True
            self._version = _weights_version(self.block.module)
        return self.engine._spare


class SequentialCalibration:
    """Feeds calibration samples through a model block by block (see the module docstring).

    The hidden states live in two buffers of ``[samples, seq_len, hidden]`` allocated once: the
    current block reads one and writes the other, and they swap before the next block. Keeping
    them in place (rather than as fresh tensors per batch and block) is what holds the process's
    memory to the two buffers: freed per-batch tensors of a megabyte or so are not handed back
    to the system by the C allocator and would pile up as fragmentation.
    """

    def __init__(
        self,
        model: Any,
        adapter: ArchitectureAdapter,
        calibration: CalibrationData,
        *,
        batch_tokens: int = 512,
        batch_size: int | None = None,
    ) -> None:
        """``batch_size`` samples per forward (default: as many as fit in ``batch_tokens``
        tokens, at least one: a block's transient activations stay small)."""
        self.module: nn.Module = model.model if hasattr(model, "model") and not isinstance(model, nn.Module) else model
        # a model opened block by block: each block is read when its turn comes and written once done
        self.stream = getattr(model, "stream", None) if not isinstance(model, nn.Module) else None
        self.layout = adapter.layout(self.module)
        if not self.layout.blocks:
            raise ArchitectureError(f"{type(self.module).__name__} has no blocks to calibrate")
        self.calibration = calibration
        self.world: World = calibration.world or SINGLE
        self.world.check_samples(calibration.n_samples)
        #: this rank's calibration samples (all of them in one process), a contiguous range
        self.samples = self.world.share(calibration.n_samples)
        if batch_size is None:
            batch_size = batch_tokens // max(1, calibration.seq_len)
        self.batch_size = max(1, batch_size)
        self.device = self.stream.device if self.stream is not None else next(self.module.parameters()).device
        # bfloat16 calibration: blocks run under autocast (weights stay as they are; the cast
        # copies are cached for one pass over a block), hidden states are kept in bfloat16.
        self.autocast = calibration.precision == "bfloat16"
        self._hidden = torch.empty(0)  # the current block's inputs
        self._spare = torch.empty(0)  # where the current block writes its outputs
        self._kwargs: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self.layout.blocks)

    @property
    def first_token(self) -> int:
        """The index, among all calibration tokens in sample order, of this rank's first token."""
        return self.samples.start * self.calibration.seq_len

    def _batches(self) -> list[slice]:
        n = len(self.samples)
        return [slice(start, min(start + self.batch_size, n)) for start in range(0, n, self.batch_size)]

    def capture(self) -> torch.Tensor:
        """Inputs of the first block for every calibration sample (also each batch's keyword
        arguments: attention masks, positions, rotary embeddings), without running the rest of
        the model."""
        first = self.layout.blocks[0].module
        kwargs: list[dict[str, Any]] = []
        buffers: list[torch.Tensor] = []
        current: list[slice] = []

        def grab(_module: nn.Module, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
            hidden = args[0] if args else kw.pop("hidden_states")
            if not buffers:
                shape = (len(self.samples), *hidden.shape[1:])
                dtype = torch.bfloat16 if self.autocast else hidden.dtype
                buffers.extend(torch.empty(shape, dtype=dtype, device=hidden.device) for _ in range(2))
            buffers[0][current[0]].copy_(hidden)
            kwargs.append(_share_equal(kwargs[-1] if kwargs else {},
                                       {k: v for k, v in kw.items() if k != "hidden_states"}))
            raise _Captured

        handle = first.register_forward_pre_hook(grab, with_kwargs=True)
        # a model opened block by block has its token embedding filled for this pass only
        embedding = self.stream.embedding_loaded() if self.stream is not None else contextlib.nullcontext()
        try:
            with torch.no_grad(), embedding:
                offset = self.samples.start
                for batch in self._batches():
                    current[:] = [batch]
                    rows = slice(batch.start + offset, batch.stop + offset)
                    try:
                        self.module(input_ids=self.calibration.input_ids[rows].to(self.device), use_cache=False)
                    except _Captured:
                        pass
        finally:
            handle.remove()
        self._hidden, self._spare = buffers
        self._kwargs = kwargs
        return self._hidden

    def _precision(self) -> Any:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.autocast)

    def _run_block(self, block: nn.Module, between_batches: Any = None, *, write: bool = True) -> None:
        """Run ``block`` on every batch of the current inputs, writing its outputs to the spare
        buffer (``write=False``: a hook may stop each forward early; nothing is written)."""
        with torch.no_grad(), self._precision():
            for batch, kw in zip(self._batches(), self._kwargs):
                try:
                    output = _output(block(self._hidden[batch], **kw))
                except _Captured:
                    if write:
                        raise
                else:
                    if write:
                        self._spare[batch].copy_(output)
                    del output
                if between_batches is not None:
                    between_batches()

    def final_hidden_states(self, report: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Every block run in turn over all samples, nothing changed: the last block's outputs,
        ``[samples, seq_len, hidden]`` (before the final norm). A model opened block by block has
        each block filled for its turn and emptied after it, nothing written
        (:meth:`~slimkit.core.stream.blocks.BlockStream.visit_block`). ``report(done, total)``
        is called after each block."""
        was_training = self.module.training
        self.module.eval()
        try:
            self.capture()
            total = len(self.layout.blocks)
            for index, block in enumerate(self.layout.blocks, start=1):
                if self.stream is not None:
                    self.stream.visit_block(block)
                try:
                    self._run_block(block.module, write=True)
                finally:
                    if self.stream is not None:
                        self.stream.release_block(block)
                self._hidden, self._spare = self._spare, self._hidden
                release_free_memory()  # the block's temporaries, back to the system
                if report is not None:
                    report(index, total)
            return self._hidden
        finally:  # the caller holds the result; the spare buffer and the batches' arguments go
            self._hidden, self._spare, self._kwargs = torch.empty(0), torch.empty(0), []
            self.module.train(was_training)

    def _check_same(self, block: BlockLayout) -> None:
        """Stop, naming the block, if the ranks' weights of ``block`` differ after the method."""
        if not self.world.distributed:
            return
        tensors = list(block.module.state_dict().values())
        if not self.world.same_tensors(tensors, f"comparing {block.name} across the ranks"):
            raise DistributedError(
                f"the ranks hold different weights for {block.name} after this step: the method computed "
                "them from its own rank's samples without reducing them (BlockStep.all_reduce, gather_rows, "
                "solve_each); run it in one process, or make it reduce what it measures")

    def __iter__(self) -> Iterator[BlockStep]:
        was_training = self.module.training
        self.module.eval()
        try:
            self.capture()
            last = len(self.layout.blocks) - 1
            stream: Any = self.stream
            skip = stream.restorable() if stream is not None else 0
            if skip:  # a resumed streamed run: the first unfinished block's inputs were saved
                self._hidden.copy_(stream.hidden())
            for index, block in enumerate(self.layout.blocks):
                if index < skip:
                    yield BlockStep(self, block, restored=stream.restore_block(block))
                    continue
                if self.stream is not None:
                    self.stream.load_block(block)
                step = BlockStep(self, block)
                yield step
                self._check_same(block)
                if index < last:  # nothing reads the last block's outputs
                    step.outputs()  # what the (possibly compressed) block now produces ...
                    self._hidden, self._spare = self._spare, self._hidden  # ... feeds the next one
                if self.stream is not None:
                    self.stream.store_block(block, step.record, self._hidden if index < last else None)
                del step
                release_free_memory()  # the block's statistics and temporaries, back to the system
            self._hidden, self._spare, self._kwargs = torch.empty(0), torch.empty(0), []  # done: free them
        finally:
            self.module.train(was_training)
