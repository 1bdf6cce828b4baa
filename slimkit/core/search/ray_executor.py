"""Tasks on a Ray cluster (``slimkit[ray]``): each a remote call writing to the catalogue by URL.

A cluster across machines needs a catalogue every node reaches (PostgreSQL) and an artifact
store they share (``--artifacts``, SLIMKIT_ARTIFACTS): a worker saves the models it makes there.
An address that does not answer is refused before any work, within seconds.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from slimkit.core.errors import SlimkitError
from slimkit.core.search.tasks import Failure

#: environment a worker needs to find the same catalogue, artifact store and plugins
_FORWARDED = ("SLIMKIT_CATALOGUE", "SLIMKIT_ARTIFACTS", "SLIMKIT_ARTIFACT_CACHE", "SLIMKIT_LOAD_PLUGINS",
              "SLIMKIT_BLOCK_PLUGINS", "PYTHONPATH", "HF_HOME", "HF_HUB_OFFLINE")


def _remote_task(task: Any) -> Any:  # pragma: no cover - runs in a Ray worker
    from slimkit.core.search.tasks import failure_of, run_task

    try:
        return run_task(task)
    except Exception as error:
        return failure_of(error)


def check_address(address: str, timeout: float = 5.0) -> None:
    """Refuse a HOST:PORT where nothing answers (before Ray would wait a long while)."""
    host, _, port = address.rpartition(":")
    if address.startswith("ray://"):
        host, _, port = address[len("ray://"):].rpartition(":")
    if not host or not port.isdigit():
        raise SlimkitError(f"Ray address {address!r}: write auto, local, or HOST:PORT (e.g. 127.0.0.1:6379)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise SlimkitError(f"the Ray cluster at {address} does not answer ({reason})") from None


class RayExecutor:
    """Tasks as Ray remote calls, as many at a time as the cluster has CPUs for (``workers`` at
    most). ``address``: ``auto`` (RAY_ADDRESS or a cluster started on this machine), HOST:PORT, or
    ``local`` (a cluster of ``workers`` CPUs started for the search and stopped after it)."""

    def __init__(self, address: str, workers: int) -> None:
        try:
            import ray
        except ImportError:
            raise SlimkitError("the Ray executor needs Ray: pip install 'slimkit[ray]'") from None
        self._ray = ray
        if address not in {"auto", "local"}:
            check_address(address)
        env = {k: v for k, v in os.environ.items() if k in _FORWARDED}
        try:
            if address == "local":
                ray.init(num_cpus=workers, include_dashboard=False, runtime_env={"env_vars": env},
                         log_to_driver=False)
            else:
                ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False)
        except (ConnectionError, RuntimeError) as error:
            hint = " (start one with `ray start --head`, or use --address local)" if address == "auto" else ""
            raise SlimkitError(f"cannot join the Ray cluster at {address}: "
                               f"{str(error).splitlines()[0].split('. Please')[0]}{hint}") from None
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.slots = max(1, min(workers, cpus))
        threads = max(1, cpus // self.slots)
        # max_retries=0: a task whose worker dies is retried once by the search, which says so
        self._remote = ray.remote(num_cpus=threads, max_retries=0)(_remote_task)
        self._running: dict[Any, Any] = {}  # object ref -> key

    def submit(self, key: Any, task: Any) -> None:
        self._running[self._remote.remote(task)] = key

    def next_done(self) -> tuple[Any, Any]:
        ray = self._ray
        ready, _ = ray.wait(list(self._running), num_returns=1)
        ref = ready[0]
        key = self._running.pop(ref)
        try:
            return key, ray.get(ref)
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.LocalRayletDiedError) as error:
            return key, Failure(f"its Ray worker died ({type(error).__name__})", died=True)
        except ray.exceptions.RayError as error:
            return key, Failure(f"Ray: {str(error).splitlines()[0]}")

    def close(self) -> None:
        for ref in list(self._running):
            try:
                self._ray.cancel(ref, force=True)
            except Exception:  # (already finished)
                pass
        self._running.clear()
        self._ray.shutdown()
