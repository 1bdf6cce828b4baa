"""A forward pass through a model opened block by block, for evaluations that read it.

:func:`streamed_hidden_states` runs token windows ``[N, L]`` through every decoder block with the
calibration engine's machinery (:meth:`SequentialCalibration.final_hidden_states`): the windows'
inputs to the first block are captured from the embeddings, then each block in turn is filled
from the shards, run over all windows batch by batch, and emptied again, nothing written. Memory
holds one block and two ``[N, L, hidden]`` buffers of hidden states, never the whole model. What
comes after the blocks (the final norm, the output head, whatever the model does to its logits)
is the caller's: an untied head is filled only for that (:meth:`BlockStream.head_loaded`).
The same call works on a model in memory (the blocks are then just run in turn).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from slimkit.core.calibration import SequentialCalibration
from slimkit.core.data import CalibrationData
from slimkit.core.errors import DataError


def streamed_hidden_states(
    model: Any, adapter: Any, input_ids: torch.Tensor, *, batch_size: int = 1,
    report: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """The last decoder block's outputs (before the final norm) for ``input_ids`` ``[N, L]``, as
    ``[N, L, hidden]`` on the model's device, computed one block at a time.

    :param model: a :class:`~slimkit.LoadedModel`, streamed (``model.stream``) or in memory.
    :param adapter: its architecture adapter (``host.adapter_for(model)``).
    :param batch_size: windows per forward pass of a block (the same batches as a whole-model
        forward with this batch size, hence the same numbers).
    :param report: called with ``(blocks done, blocks)`` after each block.
    """
    if input_ids.dim() != 2 or input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise DataError(f"a streamed forward takes token windows [N, L], got a tensor of shape {tuple(input_ids.shape)}")
    stream = getattr(model, "stream", None)
    if stream is not None:
        stream.check_open("run the blocks")
    # The engine's inputs are calibration windows; these are windows too (evaluation text,
    # not drawn at random): the fingerprint and seed are nobody's business here.
    windows = CalibrationData(input_ids=input_ids, fingerprint="", source="evaluation windows", seed=0)
    engine = SequentialCalibration(model, adapter, windows, batch_size=batch_size)
    return engine.final_hidden_states(report)
