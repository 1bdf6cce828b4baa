"""One compression step, planned and run: the single executor behind recipe runs and ``reproduce``.

A :class:`PlannedStep` knows, before it runs, everything its id covers (the compressor, each
method it runs inside, their plugins and configs, the seed); :func:`run_step` applies it to a
model with a context that lets it use exactly the scorers it declared, times it, measures its
peak memory, and turns an exception from the plugin's code into one line naming the plugin.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimkit.core.config import MethodConfig, serialise_config
from slimkit.core.contracts import CompressionSummary, MethodContext, ProgressCallback
from slimkit.core.errors import PluginError
from slimkit.core.identity import MethodIdentity, guarded, plugin_label, step_identity
from slimkit.core.memory import peak_rss_bytes, reset_peak
from slimkit.core.provenance import Stopwatch, step_key

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.data import CalibrationData
    from slimkit.core.host import Host
    from slimkit.core.model_io import LoadedModel
    from slimkit.core.registry import MethodInfo


@dataclass(frozen=True)
class PlannedStep:
    """A validated step: its compressor, config, the methods it runs inside, and its seed."""

    info: "MethodInfo[Any]"
    config: MethodConfig
    uses: tuple[MethodIdentity, ...]
    seed: int

    @property
    def serial(self) -> dict[str, Any]:
        """The compressor's stored config, ``{type, version, data}``."""
        return serialise_config(self.info.name, self.info.version, self.config)

    def key(self, parents: list[dict[str, str]], fingerprint: str | None) -> str:
        """The step's id on these parents with this calibration data."""
        return step_key(parents, step_identity(self.info, self.serial, self.uses), fingerprint, self.seed)

    def context(self, host: "Host", **kwargs: Any) -> MethodContext:
        """A context that admits the scorers this step declared, and no other."""
        declared = frozenset(use.name for use in self.uses if use.family == "scorer")
        return host.context(declared_scorers=declared, method=self.info.name, seed=self.seed, **kwargs)


@dataclass(frozen=True)
class StepOutcome:
    """What running a step gave: the compressor's summary, its wall time and peak memory."""

    summary: CompressionSummary
    seconds: float
    peak_rss_bytes: int | None


def run_step(
    host: "Host",
    step: PlannedStep,
    model: "LoadedModel",
    *,
    calibration: "CalibrationData | None" = None,
    progress: ProgressCallback | None = None,
    teacher: "LoadedModel | None" = None,
    work_dir: Path | None = None,
) -> StepOutcome:
    """Apply ``step`` to ``model`` in place.

    :raises PluginError: the compressor (or a scorer it ran) raised something other than a
        :class:`SlimkitError`, or returned something other than a :class:`CompressionSummary`;
        the message names the method, its plugin and the cause (the original is chained).
    """
    ctx = step.context(host, calibration=calibration, progress=progress, teacher=teacher, work_dir=work_dir)
    adapter = host.adapter_for(model)
    compressor = step.info.create()
    reset_peak()
    with Stopwatch() as watch:
        summary = guarded(step.info, "compress_", lambda: compressor.compress_(model, adapter, step.config, ctx))
    peak = peak_rss_bytes()  # the step's own peak, before hashing the result adds its buffers
    if not isinstance(summary, CompressionSummary):
        raise PluginError(f"{plugin_label(step.info)}: compress_ returned {type(summary).__name__}, "
                          "not a CompressionSummary")
    return StepOutcome(summary, watch.seconds, peak)


def check_step(host: "Host", step: PlannedStep, model: "LoadedModel", adapter: Any,
               calibration: "CalibrationData | None") -> None:
    """The compressor's own ``check`` of ``model``, with a plugin's non-slimkit exception named."""
    ctx = step.context(host, calibration=calibration)
    guarded(step.info, "check", lambda: step.info.create().check(model, adapter, step.config, ctx))
