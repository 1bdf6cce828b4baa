"""What a recipe run does differently when it is one rank of several.

Every rank runs the recipe's steps on its share of the calibration samples; rank 0 alone
evaluates, saves, records and prints. Before any work the ranks compare what they were started
with (the recipe, the model, the runtime, the versions) and, once the model and data are loaded,
the input model's id and the calibration data's fingerprint: a difference is refused by name.
A rank other than 0 that streams writes its blocks into a scratch folder of its own (a later
streamed step reads its own copy) that is removed when the run ends.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from slimkit.core.distributed.world import World
from slimkit.core.errors import DistributedError


def start_facts(recipe_text: str, model: Any, runtime: Any) -> dict[str, str]:
    """What every rank must agree on before any work: the recipe (by digest), the model as given,
    the runtime options, and the versions of slimkit and torch."""
    from slimkit.core.provenance import runtime_versions

    source = getattr(model, "source", None) or str(model)
    return {
        "recipe": "sha256:" + hashlib.sha256(recipe_text.encode()).hexdigest()[:16],
        "model": str(source),
        "dtype": str(runtime.dtype),
        "device type": str(runtime.device).split(":")[0] if runtime.device is not None else "cpu",
        **runtime_versions(),
    }


def scratch_target(world: World) -> Path:
    """Where a rank other than 0 writes the blocks of a streamed run (never published): a folder
    in the temporary directory, created by the run's first write, removed by :func:`remove_scratch`."""
    return Path(tempfile.gettempdir()) / f"slimkit-rank{world.rank}-{uuid.uuid4().hex[:12]}" / "model"


def remove_scratch(target: Path | None) -> None:
    if target is not None:
        shutil.rmtree(target.parent, ignore_errors=True)


def check_same_model(world: World, model: Any, step: int, method: str) -> None:
    """After a step: stop, naming it, if the ranks' models differ (a method that computed its result
    from its own rank's samples without reducing them)."""
    if not world.distributed:
        return
    tensors = list(model.state_dict().values())
    if not world.same_tensors(tensors, f"comparing the model after step {step} ({method})"):
        raise DistributedError(
            f"step {step} ({method}) left different weights on the ranks: the method does not reduce what it "
            "measures across the ranks; run it in one process (without --nproc)")


def ranks_record(world: World, peak_rss_bytes: int | None) -> dict[str, Any]:
    """What a step records of a data-parallel run: the ranks, the backend, each rank's peak memory."""
    peaks = world.gather_objects(peak_rss_bytes, "exchanging the ranks' peak memory")
    return {"ranks": world.size, "backend": world.backend, "peak_rss_bytes": peaks}
