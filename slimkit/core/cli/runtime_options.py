"""``--dtype`` and ``--device`` for the commands that load a model (run, eval, score, export).

The options are remembered on the click context (``runtime_choice``) rather than passed to each
command; ``--device`` is checked as it is parsed, so a GPU that is not there fails before
anything loads.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import click

from slimkit.core.runtime import DTYPES, resolve_device

F = TypeVar("F", bound=Callable[..., Any])
KEY = "slimkit.runtime"


def _remember(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and param.name == "device":
        resolve_device(value)
    ctx.meta.setdefault(KEY, {})[param.name] = value
    return value


def runtime_options(command: F) -> F:
    """Add ``--dtype`` and ``--device`` to a command."""
    command = click.option(
        "--device", default=None, metavar="cpu|cuda|cuda:N|auto", expose_value=False, callback=_remember,
        help="Where the model runs (default: cpu, or the recipe's runtime: section); auto takes a GPU when "
             "there is one.")(command)
    return click.option(
        "--dtype", type=click.Choice(DTYPES), default=None, expose_value=False, callback=_remember,
        help="Weights' precision (default: float32, or the recipe's runtime: section); auto keeps the "
             "checkpoint's where this device computes it natively (measured on a CPU), else float32.")(command)


def runtime_choice(ctx: click.Context) -> dict[str, str | None]:
    """``{"dtype": ..., "device": ...}`` as given on the command line (``None``: not given)."""
    chosen = ctx.meta.get(KEY, {})
    return {"dtype": chosen.get("dtype"), "device": chosen.get("device")}


def merged_runtime(ctx: click.Context, runtime: Any = None, **overrides: Any) -> Any:
    """``runtime`` (a recipe's section, default: the defaults) with what the command line gave
    (``--dtype``, ``--device``, and ``overrides`` that are not ``None``) in its place."""
    from slimkit.core.runtime import RuntimeSpec

    given = {key: value for key, value in {**runtime_choice(ctx), **overrides}.items() if value is not None}
    return (runtime or RuntimeSpec()).model_copy(update=given)
