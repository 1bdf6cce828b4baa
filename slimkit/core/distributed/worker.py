"""One rank of a recipe run started by :func:`slimkit.core.distributed.spawn.run_on_ranks`.

``python -m slimkit.core.distributed.worker JOB`` (with torchrun's environment, see
:mod:`.launch`): reads the job the caller pickled (the recipe, the model as named, the output,
the catalogue, the runtime), joins the other ranks and runs the recipe. Rank 0 prints each
progress event as one line ``SLIMKIT-PROGRESS {json}`` on its standard output, for the caller to
show, and pickles the run's result or its error into the job's result file.
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path
from typing import Any

from slimkit.core.distributed.spawn import PROGRESS_PREFIX


def _emit(event: Any) -> None:
    print(PROGRESS_PREFIX + json.dumps({"stage": event.stage, "done": event.done, "total": event.total,
                                        "message": event.message}), flush=True)


def payload(result: Any) -> dict[str, Any]:
    """Every field of a :class:`~slimkit.core.run_result.RunResult` but the model, which the
    caller opens from the output folder."""
    from dataclasses import fields

    return {field.name: getattr(result, field.name) for field in fields(result) if field.name != "model"}


def _portable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling, else a plain error with its message."""
    from slimkit.core.errors import SlimkitError

    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return SlimkitError(f"{type(error).__name__}: {error}")


def main(job_file: str) -> int:
    from slimkit.core.distributed.join import join, leave, stop_on_sigterm
    from slimkit.core.errors import ExportError, SlimkitError
    from slimkit.core.runner import run_recipe

    import torch
    from transformers.utils import logging as hf_logging

    job = pickle.loads(Path(job_file).read_bytes())
    torch.set_num_threads(job["threads"])
    hf_logging.disable_progress_bar()  # rank 0's progress goes to the caller as events; the rest is noise
    outcome: dict[str, Any] = {}
    code = 0
    world = None
    disarm = None
    try:
        world = join(job["runtime"].device)
        disarm = stop_on_sigterm(world)
        result = run_recipe(job["recipe"], job["model"], out=job["out"], overwrite=job["overwrite"],
                            catalogue=job["catalogue"], force=job["force"], name=job["name"],
                            runtime=job["runtime"], world=world, progress=_emit if world.leader else None)
        outcome["result"] = payload(result)
    except BaseException as error:  # the caller re-raises it; this rank exits 1 (KeyboardInterrupt too)
        if isinstance(error, ExportError) and error.result is not None:
            outcome["result"] = payload(error.result)
            error = ExportError(error.problems, "export", None)
        outcome["error"] = _portable(error)
        code = 1
        if world is None or not world.leader:  # rank 0's error is the caller's to report
            cause = str(error) if isinstance(error, SlimkitError) else f"{type(error).__name__}: {error}"
            print(f"Error: {cause}", file=sys.stderr)
    finally:
        if disarm is not None:
            disarm()  # the run is over: the outcome is written whatever the launcher does now
        if world is None or world.leader:
            Path(job["result"]).write_bytes(pickle.dumps(outcome))
        leave()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
