"""The exporter contract: the fifth method family, registered through ``register_exporters``.

An exporter writes a model in a format another runtime loads (llama.cpp, vLLM, transformers,
ONNX Runtime...). Like the other families it has a stable ``name`` (the format users ask for),
an integer ``version`` (bump it when the same model and config would give a different file), a
frozen pydantic ``Config`` and one method that does the work. Unlike a compressor it never
changes the model.

slimkit owns everything around the exporter, so every format gets it the same way:

* :meth:`BaseExporter.check` runs first and lists every reason the model cannot be written
  (a low-rank layer, a bit width or group size the format cannot hold), each naming the layer
  and what would work; nothing is written unless the list is empty;
* :meth:`BaseExporter.export` writes to a staging path beside the target, which slimkit renames
  into place only when the exporter returned: an interrupted or failed export leaves nothing;
* the file (or folder) must carry the model's content id, ``ctx.content_id`` (a metadata key,
  a ``slimkit.json``), and :meth:`BaseExporter.identify` reads it back, so ``slimkit show FILE``
  finds the model and its lineage even after the file was copied elsewhere;
* the export is recorded in the catalogue as a location of its model (format, path, size,
  sha256, exporter, plugin and version).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Mapping, Protocol, runtime_checkable

from slimkit.core.config import MethodConfig
from slimkit.core.contracts import MethodContext, _MethodBase

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.architecture import ArchitectureAdapter
    from slimkit.core.model_io import LoadedModel

#: The metadata key (GGUF) or ``slimkit.json`` field that holds the exported model's content id.
CONTENT_ID_KEY = "slimkit.content_id"


@dataclass
class ExportContext(MethodContext):
    """A :class:`MethodContext` for an export, with what the file must carry.

    :ivar content_id: the exported model's content id (``sha256:...``); write it into the file
        so :meth:`BaseExporter.identify` can read it back.
    :ivar provenance: the model's lineage (its ``slimkit.json`` document), or ``None`` for a model
        slimkit did not make; exporters may embed it.
    :ivar adapter: the architecture adapter of the model, or ``None`` when none matches (an
        exporter that needs the layout says so in :meth:`BaseExporter.check`).
    """

    content_id: str = ""
    provenance: Mapping[str, Any] | None = None
    adapter: "ArchitectureAdapter | None" = None


@dataclass(frozen=True)
class ExportSummary:
    """What an exporter wrote: a one-line description and machine-readable details (for
    instance how many tensors went out as which type)."""

    description: str
    details: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Exporter(Protocol):
    """Writes a model in one format; never changes the model."""

    name: ClassVar[str]
    version: ClassVar[int]
    Config: ClassVar[type[MethodConfig]]
    writes: ClassVar[Literal["file", "folder"]]
    suffix: ClassVar[str]

    def check(self, model: "LoadedModel", config: Any, ctx: ExportContext) -> list[str]: ...

    def export(self, model: "LoadedModel", out: Path, config: Any, ctx: ExportContext) -> ExportSummary: ...

    @classmethod
    def identify(cls, path: Path) -> str | None: ...


class BaseExporter(_MethodBase):
    """Base class for exporters: set ``name``, ``Config``, ``writes`` and ``suffix``; implement
    ``check``, ``export`` and ``identify``.

    :cvar writes: ``"file"`` (``out`` is a path to create, e.g. a ``.gguf``) or ``"folder"``
        (``out`` is an empty folder slimkit created).
    :cvar suffix: the usual ending of an output of this format (``".gguf"``; ``""`` for folders),
        used to name an output the user did not name.
    """

    writes: ClassVar[Literal["file", "folder"]] = "file"
    suffix: ClassVar[str] = ""

    def check(self, model: "LoadedModel", config: Any, ctx: ExportContext) -> list[str]:
        """Every reason ``model`` cannot be exported with ``config``, one line each, naming the
        layer and what would work (another format, a parameter, a method to run first). Empty
        when it can. Called before anything is written; must not change the model."""
        return []

    def estimated_bytes(self, model: "LoadedModel", config: Any) -> int | None:
        """About how many bytes the export will take (checked against the free space before
        writing); ``None`` if unknown."""
        return None

    def export(self, model: "LoadedModel", out: Path, config: Any,
               ctx: ExportContext) -> ExportSummary:  # pragma: no cover - abstract
        """Write ``model`` to ``out`` (see ``writes``) and say what was written. ``out`` is a
        staging path: write there and nowhere else. Must carry ``ctx.content_id``."""
        raise NotImplementedError

    @classmethod
    def identify(cls, path: Path) -> str | None:
        """The content id an output of this exporter at ``path`` carries, or ``None`` when
        ``path`` is not such an output (or carries none). Must not raise for other files."""
        return None
