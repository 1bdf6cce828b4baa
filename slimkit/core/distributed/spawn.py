"""A recipe run divided among ranks this process starts: what ``runtime: {ranks: N}``, ``--nproc N``
and the JupyterLab panel's *ranks* field do.

The caller (one ordinary process: the CLI, a script, a notebook kernel) pickles the job into a
private temporary folder and starts N ranks of :mod:`.worker` (:func:`.launch.launch`). It shows
rank 0's progress events as they come, and turns rank 0's result or error into its own. The ranks
load the model themselves, so the model is given as a folder, a file, ``example:NAME`` or a
catalogue name (not a model in memory). Each uses the caller's threads divided by the number of
ranks. They use the installed plugins (entry points): a plugin registered only in the calling
process is not seen.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable

from slimkit.core.distributed.launch import launch
from slimkit.core.errors import DistributedError, ExportError
from slimkit.core.run_result import RunResult

MODULE = "slimkit.core.distributed.worker"
#: how rank 0 prints a progress event for the caller: this, then the event as JSON, on one line
PROGRESS_PREFIX = "SLIMKIT-PROGRESS "


def catalogue_reference(catalogue: Any) -> Any:
    """What a rank opens: the catalogue's URL for an open catalogue, else ``catalogue`` as given
    (a URL, ``None`` for the default one, ``False`` for none)."""
    url = getattr(catalogue, "url", None)
    return str(url) if url is not None else catalogue


def run_on_ranks(recipe: Any, model: Any, runtime: Any, *, out: Any, overwrite: bool, catalogue: Any,
                 force: bool, name: str | None, progress: Callable[[Any], None] | None, host: Any) -> RunResult:
    """Run ``recipe`` on ``runtime.ranks`` ranks: rank 0's result, its saved model opened again here
    (block by block when the run streamed).

    :raises DistributedError: ``model`` is in memory, there is nowhere to keep the result, or a
        rank failed without saying why; rank 0's own error is raised as it was (an
        :class:`ExportError` with the run's result, when the model was saved and an export failed)."""
    import torch

    from slimkit.core.contracts import ProgressEvent

    if not isinstance(model, (str, os.PathLike)):
        raise DistributedError("a model in memory cannot be divided among ranks: give its folder, file or "
                               "catalogue name (each rank loads it)")
    if out is None and catalogue is False:
        raise DistributedError("a run on several ranks needs an output folder or a catalogue to keep the model in")
    said: list[str] = []

    def line(text: str) -> None:
        if text.startswith(PROGRESS_PREFIX):
            if progress is not None:
                progress(ProgressEvent(**json.loads(text[len(PROGRESS_PREFIX):])))
        else:
            print(text)

    with tempfile.TemporaryDirectory(prefix="slimkit-job-") as folder:
        job_file, result_file = Path(folder) / "job.pickle", Path(folder) / "result.pickle"
        job = {"recipe": recipe, "model": os.fspath(model), "out": os.fspath(out) if out is not None else None,
               "overwrite": overwrite, "catalogue": catalogue_reference(catalogue), "force": force, "name": name,
               "runtime": runtime, "result": str(result_file),
               # the caller's threads divided among the ranks: N ranks do not each take every core
               "threads": max(1, torch.get_num_threads() // runtime.ranks)}
        job_file.write_bytes(pickle.dumps(job))
        job_file.chmod(0o600)  # a catalogue URL may hold a password
        code = launch(runtime.ranks, MODULE, [str(job_file)], echo=said.append, on_line=line)
        outcome = pickle.loads(result_file.read_bytes()) if result_file.is_file() else {}
    error = outcome.get("error")
    if isinstance(error, DistributedError) and said:  # rank 0 saw another rank go: name which, and why
        error = DistributedError(f"{error}; {'; '.join(said)}")
    if error is not None:
        if isinstance(error, ExportError) and "result" in outcome:  # saved and recorded: the caller says both
            error.result = _result(outcome["result"], runtime, host)
        raise error
    if code != 0 or "result" not in outcome:
        raise DistributedError("; ".join(said) or f"the ranks failed (exit code {code}) without saying why")
    return _result(outcome["result"], runtime, host)


def _result(payload: dict[str, Any], runtime: Any, host: Any) -> RunResult:
    """Rank 0's result (:func:`.worker.payload`) with the model it saved, opened here."""
    from slimkit.core.model_io import load_model
    from slimkit.core.stream.steps import Streamed

    output = payload["output"]
    loaded = Streamed(host, output, runtime.dtype, runtime.device).reopen(str(output)) if runtime.stream else \
        load_model(output, dtype=runtime.dtype, device=runtime.device)
    return RunResult(loaded, **payload)
