"""slimkit in JupyterLab: ``%load_ext slimkit`` then ``%slimkit``, or ``Panel()`` from Python.

The panel (:class:`Panel`) chooses a model, configures any installed method through a form built
from its config schema, builds recipes, runs them off the kernel's main thread with progress and
Cancel, shows results, lineage, a Pareto plot and comparisons, all recorded in the catalogue, and
exports the model in any installed format (GGUF, compressed-tensors, third-party exporters).

Needs the ``jupyter`` extra (``pip install 'slimkit[jupyter]'``: ipywidgets, anywidget, matplotlib).
"""

from __future__ import annotations

import shlex
from typing import Any

__all__ = ["Panel", "panel", "load_ipython_extension"]


def _panel_class() -> Any:
    """The Panel class; a clear error where the optional dependencies are missing."""
    try:
        from slimkit.jupyter_ext.panel import Panel
    except ImportError as error:
        missing = getattr(error, "name", None) or str(error)
        if missing.split(".")[0] in ("ipywidgets", "anywidget", "matplotlib", "traitlets"):
            from slimkit.core.errors import SlimkitError

            raise SlimkitError(f"the JupyterLab panel needs {missing.split('.')[0]}: "
                               "pip install 'slimkit[jupyter]'") from None
        raise
    return Panel


def __getattr__(name: str) -> Any:
    if name == "Panel":  # imported on use: ipywidgets and matplotlib are optional dependencies
        return _panel_class()
    raise AttributeError(f"module 'slimkit.jupyter_ext' has no attribute {name!r}")


def panel(catalogue: Any = None, **kwargs: Any) -> Any:
    """A new :class:`Panel` (shown when it is a cell's last expression)."""
    return _panel_class()(catalogue, **kwargs)


def _magic(line: str) -> None:
    """``%slimkit [--catalogue PATH_OR_URL] [--model SPEC]``: show a panel, kept as ``slimkit_panel``."""
    import argparse

    from IPython import get_ipython
    from IPython.display import display

    parser = argparse.ArgumentParser(prog="%slimkit", add_help=False)
    parser.add_argument("--catalogue", default=None)
    parser.add_argument("--model", default=None)
    try:
        args = parser.parse_args(shlex.split(line))
    except SystemExit:
        print("usage: %slimkit [--catalogue PATH_OR_URL] [--model SPEC]")
        return
    kwargs = {"model": args.model} if args.model else {}
    from slimkit.core.errors import SlimkitError

    try:
        shown = panel(args.catalogue, **kwargs)
    except SlimkitError as error:  # a missing extra, a catalogue that cannot be opened: one line
        print(f"Error: {error}")
        return
    shell = get_ipython()
    if shell is not None:
        shell.user_ns["slimkit_panel"] = shown
    display(shown)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext slimkit``: adds the ``%slimkit`` magic."""
    ipython.register_magic_function(_magic, "line", "slimkit")
