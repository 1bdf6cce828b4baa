"""The contracts of the three method families: scorers, compressors and evaluators.

A method is a class with a stable ``name``, an integer ``version`` (bump it when the same config
would give a different result), a frozen pydantic ``Config`` and one method that does the work.
Subclass :class:`BaseScorer`, :class:`BaseCompressor` or :class:`BaseEvaluator` for the defaults;
the :class:`Scorer`, :class:`Compressor` and :class:`Evaluator` protocols state what slimkit relies
on. Instances are created with no arguments, once per use, so methods keep no state between runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Literal, Mapping, Protocol, runtime_checkable

from slimkit.core.config import EmptyConfig, MethodConfig

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from slimkit.core.architecture import ArchitectureAdapter, BlockLayout
    from slimkit.core.statistics import LinearStatistics
    from slimkit.core.data import CalibrationData
    from slimkit.core.host import Host
    from slimkit.core.model_io import LoadedModel
    from slimkit.core.scores import Scores

Granularity = Literal["weight", "neuron", "head", "block"]
#: What a scorer can score: single weights, MLP neurons, attention heads or whole blocks.
GRANULARITIES: tuple[str, ...] = ("weight", "neuron", "head", "block")
Family = Literal["scorer", "compressor", "architecture", "evaluator", "exporter"]


@dataclass(frozen=True)
class ProgressEvent:
    """One progress update: ``done`` of ``total`` units of ``stage`` (e.g. blocks, windows)."""

    stage: str
    done: int
    total: int
    message: str = ""


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass(frozen=True)
class MethodUse:
    """A method another method runs inside its step (a compressor's scorer): ``family``, ``name``
    and the ``params`` it is given. Declared by :meth:`BaseCompressor.uses` before the step runs,
    so the step's id covers it: a changed scorer makes a new step, never a stale reuse."""

    family: Family
    name: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class MethodContext:
    """What a running method may use besides the model and its config.

    :ivar host: the plugin host, to look up other methods (a compressor computes scores with
        :meth:`score`).
    :ivar calibration: calibration samples when the recipe provides them.
    :ivar seed: the step's seed; methods that draw random numbers must use it.
    :ivar progress: called with :class:`ProgressEvent` updates (CLI bars, Jupyter widgets).
    :ivar teacher: for a compressor with a ``teacher_field``, the teacher model the runner loaded.
    :ivar work_dir: a folder for the step's checkpoints that outlives an interrupted run (the
        same for a rerun of the same step: named after its step key); ``None`` when the run has
        neither a catalogue nor an output folder. The runner removes it once the step is done.
    """

    host: "Host"
    calibration: "CalibrationData | None" = None
    seed: int = 0
    progress: ProgressCallback | None = None
    teacher: "LoadedModel | None" = None
    work_dir: "Path | None" = None
    extras: dict[str, Any] = field(default_factory=dict)
    data_fingerprints: list[str] = field(default_factory=list)
    #: Names of the scorers the running step declared (:meth:`BaseCompressor.uses`); ``None``
    #: outside a recorded step (``slimkit score``, tests), where any installed scorer may be used.
    declared_scorers: frozenset[str] | None = None
    #: The step being run, for messages (``"prune.unstructured"``).
    method: str | None = None

    def used_data(self, fingerprint: str) -> None:
        """Declare the fingerprint of a dataset the method read (recorded with its results)."""
        if fingerprint not in self.data_fingerprints:
            self.data_fingerprints.append(fingerprint)

    def report(self, stage: str, done: int, total: int, message: str = "") -> None:
        """Say that ``done`` of ``total`` units of ``stage`` are finished (drives progress bars)."""
        if self.progress is not None:
            self.progress(ProgressEvent(stage, done, total, message))

    def blocks(self, model: "LoadedModel", adapter: "ArchitectureAdapter") -> "Iterator[BlockLayout]":
        """The model's blocks in order, for a method that changes them one at a time without
        calibration data (the calibration engine does the same walk for data-aware ones). Walking
        the model this way is what lets a method run streamed: for a model opened block by block
        each block is read when the walk reaches it and written when the walk moves on, so a
        method must not keep references to a block's tensors past its turn."""
        stream = getattr(model, "stream", None)
        for block in adapter.layout(model.model).blocks:
            if stream is not None:
                stream.load_block(block)
            yield block
            if stream is not None:
                stream.store_block(block)
                from slimkit.core.memory import release_free_memory

                release_free_memory()  # the block's temporaries, back to the system (as the engine does)

    def require_calibration(self, what: str, why: str = "") -> None:
        """Raise ConfigError unless there is calibration data; ``what`` needs it (``why``: for what)."""
        from slimkit.core.errors import ConfigError

        if self.calibration is None:
            raise ConfigError(f"{what} needs calibration data{f' ({why})' if why else ''}; add a calibration section")

    def scorer(self, name: str) -> Any:
        """The installed scorer called ``name`` (its registry entry: ``.cls``, ``.version``,
        ``.plugin``...). Inside a recorded step it must be one the step declared in
        :meth:`BaseCompressor.uses`, so that the step's id covers it; else :class:`PluginError`."""
        from slimkit.core.errors import PluginError

        if self.declared_scorers is not None and name not in self.declared_scorers:
            declared = ", ".join(sorted(self.declared_scorers)) or "none"
            raise PluginError(
                f"{self.method or 'this step'} used scorer {name!r}, which its uses() did not declare "
                f"(declared: {declared}); the step's id must cover every method that shapes the result"
            )
        return self.host.scorers.get(name)

    def require_scorer(self, scorer: str, granularity: str, method: str) -> Any:
        """The installed scorer ``scorer`` if ``method`` can use it: it scores ``granularity``
        units and, if it needs calibration data, there is some. Raises ConfigError otherwise."""
        from slimkit.core.errors import ConfigError

        info = self.scorer(scorer)
        if info.cls.granularity != granularity:
            raise ConfigError(
                f"scorer {scorer!r} scores {info.cls.granularity}s; {method} needs a {granularity} scorer"
            )
        if info.cls.needs_calibration:
            self.require_calibration(f"scorer {scorer!r}")
        return info

    def score_block(self, scorer: Any, block: Any, stats: Mapping[str, Any], config: Any) -> dict[str, Any]:
        """Scores of one block from ``scorer`` (its entry from :meth:`scorer`) with its validated
        ``config``: for pruners that score block by block. A scorer that raises, or returns
        weight scores of the wrong shape, is reported as :class:`PluginError` naming its plugin."""
        from slimkit.core.scores import checked_scores

        return checked_scores(scorer, lambda: scorer.create().score_block(block, stats, config, self), block.linears())

    def score(
        self,
        scorer: str,
        model: "LoadedModel",
        adapter: "ArchitectureAdapter",
        params: Mapping[str, Any] | None = None,
    ) -> "Scores":
        """Run the installed scorer called ``scorer`` on ``model`` with this context (the same
        calibration data, seed and progress) and ``params`` (validated against its ``Config``).
        Inside a recorded step the scorer must be one the step declared (:meth:`scorer`)."""
        self.scorer(scorer)  # declared by the step?
        return self.host.score(scorer, model, adapter=adapter, params=params, context=self)


@dataclass(frozen=True)
class CompressionSummary:
    """What a compressor changed: a one-line description and machine-readable details."""

    description: str
    details: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Scorer(Protocol):
    """Computes importance scores; never changes the model."""

    name: ClassVar[str]
    version: ClassVar[int]
    granularity: ClassVar[Granularity]
    Config: ClassVar[type[MethodConfig]]
    needs_calibration: ClassVar[bool]

    def score(
        self, model: "LoadedModel", adapter: "ArchitectureAdapter", config: Any, ctx: MethodContext
    ) -> "Scores": ...


@runtime_checkable
class Compressor(Protocol):
    """Changes a model in place (the caller owns the model it passes) and says what it changed."""

    name: ClassVar[str]
    version: ClassVar[int]
    Config: ClassVar[type[MethodConfig]]
    needs_calibration: ClassVar[bool]

    def check(
        self, model: "LoadedModel", adapter: "ArchitectureAdapter", config: Any, ctx: MethodContext
    ) -> None: ...

    def compress_(
        self, model: "LoadedModel", adapter: "ArchitectureAdapter", config: Any, ctx: MethodContext
    ) -> CompressionSummary: ...


@runtime_checkable
class Evaluator(Protocol):
    """Measures a model and returns named metrics (floats)."""

    name: ClassVar[str]
    version: ClassVar[int]
    Config: ClassVar[type[MethodConfig]]

    def check(self, model: "LoadedModel", config: Any, ctx: MethodContext) -> None: ...

    def evaluate(self, model: "LoadedModel", config: Any, ctx: MethodContext) -> dict[str, float]: ...


class _MethodBase:
    """Defaults shared by the three base classes."""

    name: ClassVar[str]
    version: ClassVar[int] = 1
    Config: ClassVar[type[MethodConfig]] = EmptyConfig
    needs_calibration: ClassVar[bool] = False

    @classmethod
    def describe(cls) -> str:
        """First line of the class docstring: the one-line description listings show."""
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


class BaseScorer(_MethodBase):
    """Base class for scorers: set ``name``, ``granularity``, ``Config``; implement ``score``.

    A data-aware scorer instead sets ``needs_calibration = True`` and ``statistics`` (what the
    calibration engine must accumulate at each linear layer's input: ``"input_sq_sum"``,
    ``"hessian"``) and implements ``score_block``. ``score`` then scores every block on the dense
    model, and pruners can score block by block as they go (the sequential protocol).
    """

    granularity: ClassVar[Granularity] = "weight"
    statistics: ClassVar[tuple[str, ...]] = ()

    def roles(self, config: Any) -> tuple[str, ...] | None:
        """Which projections to score (``None``: all); by default the config's ``roles``."""
        return getattr(config, "roles", None)

    def score_block(
        self, block: "BlockLayout", stats: "Mapping[str, LinearStatistics]", config: Any, ctx: MethodContext
    ) -> "dict[str, torch.Tensor]":  # pragma: no cover - abstract
        """Scores of one block's projections (by layer name) from the statistics collected at
        their inputs (``stats``: layer name -> :class:`~slimkit.LinearStatistics`)."""
        raise NotImplementedError

    def score(self, model, adapter, config, ctx):
        """Scores of the whole model; by default :meth:`score_block` on every block, on the
        calibration engine (for a scorer that sets ``statistics``)."""
        if not self.statistics:  # pragma: no cover - a data-free scorer overrides score()
            raise NotImplementedError
        from slimkit.core.calibration import SequentialCalibration
        from slimkit.core.scores import Scores

        engine = SequentialCalibration(model, adapter, ctx.calibration)
        values = {}
        for index, step in enumerate(engine, start=1):
            roles = self.roles(config)
            refs = [ref for ref in step.block.linears() if roles is None or ref.role in roles]
            values.update(self.score_block(step.block, step.collect(refs, self.statistics), config, ctx))
            ctx.report("blocks", index, len(engine))
        return Scores(self.name, self.granularity, values, config.model_dump(mode="json"))


class BaseCompressor(_MethodBase):
    """Base class for compressors: set ``name`` and ``Config``; implement ``compress_``.

    A compressor that learns from another model (distillation) names the config field holding
    it in ``teacher_field``: ``"input"`` there means the recipe's input model, anything else is
    a model spec :func:`~slimkit.load_model` takes. The runner loads the teacher, records it as a
    second parent of the step (role ``teacher``) and passes it as ``ctx.teacher``.
    """

    teacher_field: ClassVar[str | None] = None
    #: whether a streamed run of this method that was killed mid-model resumes at its first
    #: unfinished block: set it when :meth:`compress_` walks the calibration engine, skips the
    #: steps it hands back as ``step.restored`` and builds its summary from what it noted in each
    #: step's ``step.record`` (kept with the block's checkpoint)
    resumable: ClassVar[bool] = False

    def stream_refusal(self, config: Any, ctx: MethodContext) -> str | None:
        """Why this method cannot run on a model opened block by block with ``config``, or ``None``
        if it can. It can when it walks the blocks with the calibration engine or
        :meth:`MethodContext.blocks` only, touches a block's weights only in that block's turn, and
        leaves what is outside the blocks alone (the token embedding aside). The default refuses:
        a method must say that it streams."""
        return "it works on the whole model at once"

    def uses(self, config: Any) -> tuple[MethodUse, ...]:
        """The other methods this step will run with ``config``: part of the step's identity.

        The default covers the common shape, a config with a ``scorer`` name and optional
        ``scorer_params``. Override it when the compressor runs other scorers (every scorer it
        looks up through ``ctx.scorer``/``ctx.score`` must be declared here)."""
        name = getattr(config, "scorer", None)
        if not isinstance(name, str):
            return ()
        return (MethodUse("scorer", name, dict(getattr(config, "scorer_params", None) or {})),)

    def check(self, model, adapter, config, ctx) -> None:
        """Raise :class:`~slimkit.ArchitectureError` (or another :class:`~slimkit.SlimkitError`)
        if the method cannot apply to this model. Called for every step before any step runs."""

    def compress_(self, model, adapter, config, ctx):  # pragma: no cover - abstract
        """Change ``model`` in place and say what changed (a :class:`CompressionSummary`)."""
        raise NotImplementedError


class BaseEvaluator(_MethodBase):
    """Base class for evaluators: set ``name`` and ``Config``; implement ``evaluate``."""

    #: Whether :meth:`evaluate` can run on a model opened block by block (``model.stream`` is
    #: set and ``model.model`` is a skeleton on the meta device): it reaches the blocks' weights
    #: only through :func:`~slimkit.streamed_hidden_states` and an untied head only inside
    #: ``model.stream.head_loaded()``. A streamed run and ``slimkit eval --stream`` refuse an
    #: evaluator that does not say it streams.
    streams: ClassVar[bool] = False
    #: The metric names :meth:`evaluate` may return. Declared, they let a search check before any
    #: work that its objectives and constraints name metrics this evaluator produces; empty: not
    #: declared (any ``NAME.METRIC`` is then taken on trust and checked after the first trial).
    metrics: ClassVar[tuple[str, ...]] = ()

    def check(self, model, config, ctx) -> None:
        """Raise a :class:`~slimkit.SlimkitError` if the metric does not apply."""

    def evaluate(self, model, config, ctx):  # pragma: no cover - abstract
        """The metrics of ``model``: metric name -> float."""
        raise NotImplementedError
