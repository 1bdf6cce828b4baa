"""The pieces of a resumable training run: seeded batches by step index, masks that keep pruned
weights at zero, and checkpoints written atomically.

**Batches.** The text is tokenized once and cut into non-overlapping windows of ``seq_len``
tokens; epoch ``e`` visits them in the order of a permutation drawn from ``(seed, e)``. The batch
of step ``k`` is therefore a function of ``k`` alone: a resumed run sees exactly the batches the
uninterrupted one would have.

**Recomputed blocks.** :func:`recomputed` runs each block under ``torch.utils.checkpoint``: its
activations are not kept for the backward pass but computed again there (about a third more
time), so a batch needs one hidden state per block instead of every intermediate.

**Checkpoints.** Everything the next step depends on is saved: the trainable tensors, the
optimizer's state, the step and token counts, the time spent and the loss history, with a
fingerprint of what is being trained (student, teacher, config, data). A checkpoint with another
fingerprint is ignored (a different run), never loaded into the wrong model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

CHECKPOINT = "distill-state.pt"


class WindowBatches:
    """``batch(step)``: the ``[batch, seq_len]`` token ids of training step ``step``."""

    def __init__(self, ids: torch.Tensor, seq_len: int, batch_size: int, seed: int) -> None:
        windows = ids.numel() // seq_len
        if windows < 1:
            raise ValueError(f"the text has {ids.numel()} tokens, fewer than one window of {seq_len}")
        self.windows = ids[: windows * seq_len].reshape(windows, seq_len)
        self.batch_size, self.seed = batch_size, seed
        self._orders: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return self.windows.shape[0]

    def _order(self, epoch: int) -> torch.Tensor:
        if epoch not in self._orders:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._orders = {epoch: torch.randperm(len(self), generator=generator)}  # one epoch at a time
        return self._orders[epoch]

    def batch(self, step: int) -> torch.Tensor:
        rows = []
        for slot in range(step * self.batch_size, (step + 1) * self.batch_size):
            epoch, position = divmod(slot, len(self))
            rows.append(int(self._order(epoch)[position]))
        return self.windows[rows]


def sparsity_masks(params: dict[str, nn.Parameter], threshold: float = 0.01) -> dict[str, torch.Tensor]:
    """Masks (1 = may change) of the 2-D weights in which at least ``threshold`` of the entries
    are exact zeros: a pruned model stays pruned while it learns."""
    masks = {}
    for name, param in params.items():
        if param.dim() == 2:
            nonzero = param.detach() != 0
            if float((~nonzero).float().mean()) >= threshold:
                masks[name] = nonzero
    return masks


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def save_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``folder`` atomically (a crash leaves the previous checkpoint intact)."""
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".{CHECKPOINT}.tmp"
    torch.save(state, staging)
    os.replace(staging, folder / CHECKPOINT)


def load_checkpoint(folder: Path | None, expected: str) -> dict[str, Any] | None:
    """The checkpoint in ``folder`` if it belongs to this run (same fingerprint), else ``None``."""
    if folder is None or not (folder / CHECKPOINT).is_file():
        return None
    try:
        state = torch.load(folder / CHECKPOINT, map_location="cpu", weights_only=True)
    except Exception:  # a damaged checkpoint: start over rather than fail
        return None
    return state if isinstance(state, dict) and state.get("fingerprint") == expected else None


@contextlib.contextmanager
def recomputed(blocks: list[nn.Module]) -> Iterator[None]:
    """Within the block, each of ``blocks`` runs under activation checkpointing (non-reentrant, so
    keyword arguments and frozen inputs work); their own ``forward`` is back afterwards."""
    originals = []
    for block in blocks:
        original = block.forward
        originals.append((block, original))

        def forward(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            return checkpoint(_original, *args, use_reentrant=False, **kwargs)

        block.forward = forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        for block, _ in originals:
            del block.forward  # the instance attribute goes; the class's forward shows again
