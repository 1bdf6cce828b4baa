"""Data-parallel calibration on ``torch.distributed``.

Several processes (ranks) run one recipe together: each runs the calibration engine on its own
contiguous share of the calibration samples, the statistics are summed across the ranks at every
block boundary in a fixed order, the expensive per-layer solves (SparseGPT, GPTQ) are divided among
the ranks by cost and their results broadcast, and rank 0 alone saves, records and prints.
:class:`World` is what the engine and the methods see of it; :mod:`.launch` starts the ranks.
"""

from slimkit.core.distributed.world import SINGLE, World, current_world

__all__ = ["SINGLE", "World", "current_world"]
