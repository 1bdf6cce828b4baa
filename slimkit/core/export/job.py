"""One export, from a resolved exporter to a written, hashed file: what the API, the CLI and a
recipe's ``export:`` section share.

:func:`resolve_exporter` needs no model (unknown format, bad parameters); :func:`prepare_export`
asks the exporter's ``check`` for every reason it cannot write the model; :func:`write_export`
checks the free space, lets the exporter write to a staging path, hashes what it wrote and renames
it into place. A plugin's own exception becomes one :class:`PluginError` line naming the exporter
and its plugin; a system failure (disk full, permission) a :class:`FileSystemError` naming the
target.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from pydantic import ValidationError

from slimkit.core.config import MethodConfig, validation_problems
from slimkit.core.errors import ConfigError, PluginError, SlimkitError
from slimkit.core.export.contract import ExportContext, ExportSummary
from slimkit.core.export.result import ExportResult
from slimkit.core.export.staging import file_digest, stage_export
from slimkit.core.failures import is_os_failure
from slimkit.core.identity import guarded, plugin_failure, plugin_label
from slimkit.core.preflight import check_disk_space

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.contracts import ProgressCallback
    from slimkit.core.host import Host
    from slimkit.core.model_io import LoadedModel
    from slimkit.core.registry import MethodInfo


def resolve_exporter(host: "Host", format: str, params: Mapping[str, Any] | None) -> "tuple[MethodInfo[Any], MethodConfig]":
    """The installed exporter called ``format`` and ``params`` validated into its ``Config``.

    :raises UnknownMethodError: no such exporter (the message lists the installed ones).
    :raises ConfigError: every bad field, one part each, with what the exporter takes.
    """
    info = host.exporters.get(format)
    try:
        return info, info.cls.Config.model_validate(dict(params or {}))
    except ValidationError as error:
        lines = validation_problems(error, info.cls.Config, f"exporter {format!r}")
        raise ConfigError(f"exporter {format!r}: " + "; ".join(lines)) from None


@dataclass
class ExportJob:
    """An export resolved against a loaded model, ready to be written to ``target``."""

    info: "MethodInfo[Any]"
    config: MethodConfig
    target: Path
    loaded: "LoadedModel"
    exporter: Any
    ctx: ExportContext


def prepare_export(
    host: "Host",
    info: "MethodInfo[Any]",
    config: MethodConfig,
    loaded: "LoadedModel",
    target: Path,
    *,
    model_id: str | None = None,
    progress: "ProgressCallback | None" = None,
) -> tuple[ExportJob, list[str]]:
    """The job and every reason the exporter's ``check`` gives for not writing ``loaded`` (empty
    when it can). ``model_id`` is the model's content id when the caller knows it already."""
    from slimkit.core.provenance import content_id

    try:
        adapter = host.adapter_for(loaded)
    except SlimkitError:  # an exporter that needs the layout says so in its check
        adapter = None
    ctx = ExportContext(host=host, progress=progress, method=info.name,
                        content_id=model_id or content_id(loaded.model), provenance=loaded.provenance,
                        adapter=adapter)
    exporter = guarded(info, "__init__", info.create)
    problems = guarded(info, "check", lambda: exporter.check(loaded, config, ctx))
    if not isinstance(problems, (list, tuple)) or not all(isinstance(line, str) for line in problems):
        raise PluginError(f"{plugin_label(info)}: check returned {type(problems).__name__}, "
                          "not a list of problem lines")
    return ExportJob(info, config, target, loaded, exporter, ctx), list(problems)


def weights_bytes(model: Any) -> int:
    """Bytes of a model's weights and buffers in memory: the free space an exporter that gives no
    estimate is checked against (a float export of the model takes about that)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def write_export(job: ExportJob) -> ExportResult:
    """Check the free space, write through a staging path, hash, rename into place (the caller
    checked that ``job.target`` may be replaced)."""
    info, label = job.info, plugin_label(job.info)
    estimate = guarded(info, "estimated_bytes", lambda: job.exporter.estimated_bytes(job.loaded, job.config))
    if not isinstance(estimate, int) or isinstance(estimate, bool) or estimate < 0:
        estimate = weights_bytes(job.loaded.model)
    check_disk_space(job.target, estimate)

    def write(staging: Path) -> tuple[ExportSummary, int, str]:
        try:
            summary = job.exporter.export(job.loaded, staging, job.config, job.ctx)
        except Exception as error:
            if isinstance(error, SlimkitError) or is_os_failure(error):
                raise
            raise PluginError(plugin_failure(info, "export", error)) from error
        if not isinstance(summary, ExportSummary):
            raise PluginError(f"{label}: export returned {type(summary).__name__}, not an ExportSummary")
        written = staging.is_file() if info.cls.writes == "file" else staging.is_dir() and any(staging.iterdir())
        if not written:
            raise PluginError(f"{label}: export wrote no {info.cls.writes} at the path it was given")
        size, sha = file_digest(staging, lambda done, total: job.ctx.report("sha256 (MiB)", done, total))
        return summary, size, sha

    summary, size, sha = stage_export(job.target, info.cls.writes, write)
    return ExportResult(path=job.target.resolve(), format=info.name, exporter_version=info.version,
                        plugin=info.plugin, plugin_version=info.plugin_version,
                        config=job.config.model_dump(mode="json"), content_id=job.ctx.content_id,
                        size_bytes=size, sha256=sha, summary=summary, details=dict(summary.details))
