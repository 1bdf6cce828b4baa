"""The ranks of a data-parallel run, and the few collective operations slimkit uses on them.

A :class:`World` of one process (:data:`SINGLE`) makes every operation a no-op, so code written
for several ranks runs unchanged in one. Every collective is called by all ranks in the same
order (the engine's block loop fixes it), which is what makes the sums reproducible: gloo and
NCCL reduce a given tensor in an order fixed by the ranks, not by timing. A failure of the
transport (a rank that died, a peer that cannot be reached, a timeout) becomes one
:class:`~slimkit.core.errors.DistributedError` naming this rank and what it was doing.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch

from slimkit.core.errors import DataError, DistributedError
from slimkit.core.failures import first_line

T = TypeVar("T")

_OPS = ("sum", "max", "min")


def _cause(error: BaseException) -> str:
    """The cause in a few words: the first sentence of the first line, without gloo's source location."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", first_line(error))
    return text.split(". ")[0].rstrip(".")[:200]


@dataclass(frozen=True)
class World:
    """This process's place among the ranks: ``rank`` of ``size``."""

    rank: int = 0
    size: int = 1
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def leader(self) -> bool:
        """Rank 0: the one that saves, records and prints."""
        return self.rank == 0

    def share(self, count: int) -> range:
        """This rank's contiguous share of ``count`` items (samples), in order: the first
        ``count % size`` ranks take one more, so the shares differ by one at most."""
        base, extra = divmod(count, self.size)
        start = self.rank * base + min(self.rank, extra)
        return range(start, start + base + (1 if self.rank < extra else 0))

    def check_samples(self, count: int) -> None:
        """Refuse, on every rank alike, ``count`` samples that cannot give each rank one."""
        if count < self.size:
            raise DataError(f"{count} calibration samples cannot be divided among {self.size} ranks: "
                            "use at least one sample per rank (calibration: n_samples)")

    @contextlib.contextmanager
    def collective(self, what: str) -> Iterator[None]:
        """Turn a transport failure inside the block into one :class:`DistributedError`."""
        try:
            yield
        except DistributedError:
            raise
        except (RuntimeError, ValueError, OSError) as error:
            if not self.distributed:
                raise
            raise DistributedError(
                f"rank {self.rank} of {self.size}: {what} failed because another rank stopped or cannot be "
                f"reached ({_cause(error)}); the run stops and saves nothing") from error

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum", what: str = "a reduction") -> torch.Tensor:
        """``tensor`` summed (or its maximum, minimum) over the ranks, in place; returned."""
        if op not in _OPS:
            raise ValueError(f"unknown reduction {op!r}; known: {', '.join(_OPS)}")
        if self.distributed:
            import torch.distributed as dist

            sent = self._sendable(tensor)
            with self.collective(what):
                dist.all_reduce(sent, op=getattr(dist.ReduceOp, op.upper()))
            if sent is not tensor:
                tensor.copy_(sent)
        return tensor

    def broadcast(self, tensor: torch.Tensor, source: int, what: str = "a broadcast") -> torch.Tensor:
        """``source``'s ``tensor`` on every rank (in place), returned."""
        if self.distributed:
            import torch.distributed as dist

            sent = self._sendable(tensor)
            with self.collective(what):
                dist.broadcast(sent, src=source)
            if sent is not tensor:
                tensor.copy_(sent)
        return tensor

    def _sendable(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor``, or a copy on this rank's GPU when the backend (NCCL) sends nothing else."""
        if self.backend == "nccl" and tensor.device.type != "cuda":
            return tensor.to(torch.device("cuda", torch.cuda.current_device()))
        return tensor.contiguous() if not tensor.is_contiguous() else tensor

    def broadcast_object(self, obj: T, source: int, what: str = "a broadcast") -> T:
        """``source``'s picklable ``obj`` on every rank."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        with self.collective(what):
            dist.broadcast_object_list(box, src=source)
        return box[0]

    def gather_objects(self, obj: T, what: str = "an exchange") -> list[T]:
        """Every rank's picklable ``obj``, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        found: list[Any] = [None] * self.size
        with self.collective(what):
            dist.all_gather_object(found, obj)
        return found

    def gather_rows(self, tensor: torch.Tensor, what: str = "a gather") -> torch.Tensor:
        """The ranks' ``tensor``s concatenated along the first dimension in rank order (they may
        differ in length there, not in the other dimensions)."""
        if not self.distributed:
            return tensor
        import torch.distributed as dist

        lengths = self.gather_objects(int(tensor.shape[0]), what)
        longest = max(lengths)
        padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
        padded[: tensor.shape[0]].copy_(tensor)
        padded = self._sendable(padded)
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        with self.collective(what):
            dist.all_gather(parts, padded)
        return torch.cat([part[:length] for part, length in zip(parts, lengths)]).to(tensor.device)

    def agree(self, facts: dict[str, str], what: str) -> None:
        """Refuse (on every rank) unless all ranks give the same ``facts``; the message names each
        fact that differs with the ranks' values."""
        if not self.distributed:
            return
        every = self.gather_objects(facts, f"comparing the ranks' {what}")
        differing = []
        for key in sorted(set().union(*every)):
            values = [str(one.get(key, "(none)")) for one in every]
            if len(set(values)) > 1:
                shown = ", ".join(f"rank {rank}: {value[:80]}" for rank, value in enumerate(values))
                differing.append(f"{key} differs ({shown})")
        if differing:
            raise DistributedError(f"the ranks were started with different {what}: " + "; ".join(differing)
                                   + "; start every rank with the same command")

    def solve_each(self, items: Sequence[T], solve: Callable[[T], tuple[torch.Tensor, ...]],
                   cost: Callable[[T], float], apply: Callable[[T, tuple[torch.Tensor, ...]], None],
                   what: str = "the solves", drop: Callable[[T], None] | None = None) -> None:
        """``apply(item, solve(item))`` for every item in order, each ``solve`` computed by one rank
        and its result broadcast to all.

        The items are assigned to ranks by ``cost`` (longest first, each to the least loaded rank,
        ties to the lower rank: the same assignment on every rank); a rank solves its own in order,
        then every result is broadcast from its owner in item order and applied on every rank.
        ``solve`` returns a tuple of tensors; a rank that does not own an item never calls ``solve``
        for it; ``drop(item)`` is called first for each item another rank owns (to free what only its
        solve needs). In one process each result is applied as soon as it is solved (and can go)."""
        if not self.distributed:
            for item in items:
                apply(item, tuple(solve(item)))
            return
        owners = assign([cost(item) for item in items], self.size)
        if drop is not None:
            for index, item in enumerate(items):
                if owners[index] != self.rank:
                    drop(item)
        mine: dict[int, tuple[torch.Tensor, ...]] = {}
        for index, item in enumerate(items):
            if owners[index] == self.rank:
                mine[index] = tuple(solve(item))
        for index, owner in enumerate(owners):
            own = mine.pop(index, None)
            shapes = self.broadcast_object(
                [(tuple(t.shape), t.dtype, str(t.device)) for t in own] if own is not None else None, owner,
                f"{what} ({index + 1} of {len(items)})")
            if own is None:
                assert shapes is not None  # the owner always sends its results' shapes
                own = tuple(torch.empty(shape, dtype=dtype, device=_local(device)) for shape, dtype, device in shapes)
            for tensor in own:
                self.broadcast(tensor, owner, f"{what} ({index + 1} of {len(items)})")
            apply(items[index], own)

    def same_tensors(self, tensors: Sequence[torch.Tensor], what: str) -> bool:
        """Whether every rank holds the same ``tensors`` (compared by a float64 sum and sum of
        squares each: cheap, and exact for what was computed the same way on every rank)."""
        if not self.distributed:
            return True
        summary = [value for tensor in tensors for value in _moments(tensor)]
        every = self.gather_objects(summary, what)
        return all(one == every[0] for one in every)


def _local(device: str) -> torch.device:
    """This rank's device of the kind another rank named (each rank has its own GPU)."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(kind)


def _moments(tensor: torch.Tensor) -> tuple[float, float]:
    wide = tensor.detach().double()  # integer codes and masks too
    return float(wide.sum()), float((wide * wide).sum())


def assign(costs: Sequence[float], ranks: int) -> list[int]:
    """The owner rank of each item: longest processing time first, to the least loaded rank."""
    load = [0.0] * ranks
    owners = [0] * len(costs)
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        rank = min(range(ranks), key=lambda r: (load[r], r))
        owners[index] = rank
        load[rank] += costs[index]
    return owners


SINGLE = World()


def current_world() -> World:
    """The world of an initialised default process group with more than one rank, else
    :data:`SINGLE`."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return World(dist.get_rank(), dist.get_world_size(), str(dist.get_backend()))
    return SINGLE


def launched_by_torchrun() -> bool:
    """Whether this process is one of several started by ``torchrun`` (its environment says so)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ
    except ValueError:
        return False
