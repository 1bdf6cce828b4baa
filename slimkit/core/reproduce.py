"""Re-running a model's chain from its base and checking every step lands on the same weights.

Each step is replayed with its recorded method, config (resolved through the installed plugins),
seed and calibration data (rebuilt from the recorded spec and checked against its fingerprint);
the weights after each step must hash to the recorded child id. Nothing is written anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from slimkit.core.contracts import ProgressCallback
from slimkit.core.data import CalibrationData, TextSource, calibration_samples
from slimkit.core.errors import SlimkitError
from slimkit.core.host import Host, get_host
from slimkit.core.model_io import LoadedModel, load_model
from slimkit.core.identity import MethodIdentity
from slimkit.core.provenance import content_id
from slimkit.core.steps import PlannedStep, check_step, run_step

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.catalogue import Catalogue, StepEntry


class ReproduceError(SlimkitError):
    """A chain cannot be replayed (missing base, changed data, unsupported step)."""


@dataclass(frozen=True)
class ReplayedStep:
    method: str
    expected: str
    got: str
    seconds: float

    @property
    def identical(self) -> bool:
        return self.expected == self.got


@dataclass
class ReproduceReport:
    model_id: str
    base_id: str
    steps: list[ReplayedStep] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return bool(self.steps) and all(step.identical for step in self.steps) and self.steps[-1].got == self.model_id


def _load_base(cat: "Catalogue", base_id: str) -> LoadedModel:
    base = cat.model(base_id)
    tried = []
    for spec in (base.location, base.source):
        if not spec:
            continue
        tried.append(spec)
        try:
            loaded = load_model(spec)
        except SlimkitError:
            continue
        if content_id(loaded.model) == base_id:
            return loaded
        tried[-1] += " (different weights now)"
    where = "; ".join(tried) or "no location or source recorded"
    raise ReproduceError(f"the base model {base.label} is missing: tried {where}")


def _calibration(step: "StepEntry", model: LoadedModel) -> CalibrationData | None:
    spec = step.calibration
    if not spec:
        if step.calibration_fingerprint:
            raise ReproduceError(f"step {step.method} used calibration data but its spec was not recorded")
        return None
    from slimkit.core.model_io import example_text

    path = Path(spec["text"]) if spec.get("text") else example_text()
    source = TextSource(path, spec.get("field", "text"), spec.get("join", "\n\n"),
                        bool(spec.get("collapse_blank_lines", False)))
    try:
        data = calibration_samples(model.tokenizer, source, n_samples=int(spec["n_samples"]),
                                   seq_len=int(spec["seq_len"]), seed=int(spec.get("seed", 0)),
                                   precision=str(spec.get("precision", "float32")))
    except SlimkitError as error:
        raise ReproduceError(f"calibration data of step {step.method} is not available: {error}") from None
    if step.calibration_fingerprint and data.fingerprint != step.calibration_fingerprint:
        raise ReproduceError(f"calibration data of step {step.method} changed since it ran ({path})")
    return data


def reproduce(
    cat: "Catalogue",
    reference: str,
    *,
    host: Host | None = None,
    progress: ProgressCallback | None = None,
) -> ReproduceReport:
    """Replay the chain of ``reference`` from its base; stops at the first step that diverges."""
    from slimkit.core.catalogue.queries import lineage

    host = host or get_host()
    target = cat.resolve(reference)
    chain = lineage(cat, target.id)
    if not chain:
        raise ReproduceError(f"model {target.label} is a base model: it has no steps to reproduce")
    for step in chain:
        if len(step.parents) != 1:
            raise ReproduceError(f"step {step.method} has {len(step.parents)} parents; replaying those is not supported yet")
    base_id = chain[0].input_id or ""
    loaded = _load_base(cat, base_id)
    report = ReproduceReport(target.id, base_id)
    for step in chain:
        planned = _planned(host, step)
        calibration = _calibration(step, loaded)
        check_step(host, planned, loaded, host.adapter_for(loaded), calibration)
        outcome = run_step(host, planned, loaded, calibration=calibration, progress=progress)
        got = content_id(loaded.model)
        report.steps.append(ReplayedStep(step.method, step.child_id or "", got, outcome.seconds))
        if got != step.child_id:
            break
    return report


def _planned(host: Host, step: "StepEntry") -> PlannedStep:
    """The recorded step as the installed plugins run it: its compressor and the methods it used."""
    info, config = host.config_from_dict(step.family, step.config)  # type: ignore[arg-type]
    uses = []
    for use in step.uses:
        nested_info, nested_config = host.config_from_dict(use["family"], use["config"])
        uses.append(MethodIdentity.of(nested_info, nested_config))
    return PlannedStep(info, config, tuple(uses), step.seed)
