"""Exceptions that slimkit raises for problems a user can fix.

Every one of them carries a message that fits on one line and names the problem; the CLI prints
it as ``Error: ...`` and exits non-zero, without a traceback.
"""

from __future__ import annotations


class SlimkitError(Exception):
    """Base class: a problem with the user's input or environment, explained in the message."""


class ModelLoadError(SlimkitError):
    """A model path, file or hub id could not be loaded."""


class OutputExistsError(SlimkitError):
    """The output folder exists and overwriting was not asked for."""


class UnknownMethodError(SlimkitError):
    """A method, scorer, evaluator or architecture name is not installed."""


class ConfigError(SlimkitError):
    """A method's parameters do not validate against its config schema."""


class RecipeError(SlimkitError):
    """A recipe is malformed or does not validate; lists every problem found."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        if len(self.problems) == 1:
            super().__init__(f"{where}{self.problems[0]}")
        else:
            listed = "; ".join(self.problems)
            super().__init__(f"{where}{len(self.problems)} problems: {listed}")


class RunCancelled(SlimkitError):
    """A run was stopped on request (raised from its progress callback; nothing is saved)."""


class ArchitectureError(SlimkitError):
    """No adapter fits the model, or a method does not fit the model's architecture."""


class DataError(SlimkitError):
    """A data file is missing, empty, malformed or too short for what was asked."""


class PluginError(SlimkitError):
    """A plugin failed to import, raised in a hook, or registered something invalid."""


class PluginWarning(RuntimeWarning):
    """Issued once for each plugin problem the host records (see ``Host.problems``)."""


class ExportError(SlimkitError):
    """A model cannot be exported as asked: every reason, one line each, found before writing.

    :ivar result: when a recipe's ``export:`` section failed after its run saved and recorded the
        model, that run's ``RunResult`` (the model is kept); else ``None``.
    """

    def __init__(self, problems: list[str], what: str = "export", result: object = None) -> None:
        self.problems = list(problems)
        self.result = result
        super().__init__(f"{what}: " + "; ".join(self.problems) if len(self.problems) == 1
                         else f"{what}: {len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in self.problems))


class DeviceError(SlimkitError):
    """A device or precision was asked for that this machine (or this torch build) does not have."""


class DistributedError(SlimkitError):
    """A data-parallel run cannot go on: the ranks were started differently, or one of them
    stopped or cannot be reached (see :mod:`slimkit.core.distributed`)."""
